/**
 * `mlup-storage fetch --watch --to DIR`: DIR kept in step with the source.
 * Each version `Storage.watch` delivers is placed as `--to` places a fetch
 * (staged, then switched in all at once); the files an earlier version placed
 * and this one does not have are moved out in the same switch (the names
 * placed are recorded in DIR, so a restarted sidecar knows them); then
 * `--exec` runs (a server told to reload). Runs until interrupted.
 *
 * @internal
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { spawn } from "node:child_process"
import * as nodeFs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import type * as LoadedFile from "../LoadedFile.js"
import * as Storage from "../Storage.js"
import type * as StorageError from "../StorageError.js"
import * as place from "./place.js"

/**
 * The file in DIR that lists the names the last version placed there.
 *
 * @internal
 */
export const recordName = ".mlup-storage-placed.json"

const Record = Schema.parseJson(Schema.Struct({ names: Schema.Array(Schema.String) }))

/** The names an earlier run placed in `dir` (none when it has no readable record). */
const placedBefore = (dir: string): ReadonlyArray<string> => {
  try {
    const decoded = Schema.decodeUnknownOption(Record)(nodeFs.readFileSync(nodePath.join(dir, recordName), "utf8"))
    return decoded._tag === "Some" ? decoded.value.names : []
  } catch {
    return []
  }
}

/**
 * Runs `command` with the shell, its output on stderr (stdout holds the
 * command line's own result); succeeds with its exit code (a signal's is
 * 128 + its number). Interrupted: the command is sent SIGTERM.
 *
 * @internal
 */
export const runHook = (command: string, env: Record<string, string>): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
    const child = spawn(command, { shell: true, stdio: ["ignore", process.stderr, process.stderr], env: { ...process.env, ...env } })
    child.once("error", () => resume(Effect.succeed(127)))
    child.once("exit", (code, signal) =>
      resume(Effect.succeed(code ?? 128 + (signal === null ? 0 : os.constants.signals[signal]))))
    return Effect.sync(() => void child.kill("SIGTERM"))
  })

/** @internal */
export interface Placed {
  readonly version: Storage.Version
  readonly files: ReadonlyArray<place.Delivered & { readonly file?: place.Source["file"] }>
}

/**
 * Follows the storage into `to` (see the module's doc); `report` tells each
 * version placed, before the hook runs.
 *
 * @internal
 */
export const follow = <E, R>(options: {
  readonly storage: Storage.Service
  readonly to: string
  readonly link: boolean
  readonly watch: Storage.WatchOptions
  readonly exec: string | undefined
  readonly report: (placed: Placed) => Effect.Effect<void, E, R>
}): Effect.Effect<void, StorageError.StorageError | LoadedFile.BytesReleasedError | E, FileSystem.FileSystem | Path.Path | R> =>
  Effect.suspend(() => {
    const to = nodePath.resolve(options.to)
    let names = placedBefore(to)
    return Storage.watch(options.watch).pipe(
      Stream.runForEach((version) =>
        Effect.gen(function*() {
          const files = yield* place.placeAll(yield* place.describe(version.files), to, {
            link: options.link,
            retire: names,
            record: recordName
          })
          names = files.map((file) => nodePath.relative(to, file.path))
          yield* options.report({ version, files })
          // Placed: the version's bytes (need_load_file) are no longer needed.
          yield* version.release
          if (options.exec !== undefined) {
            const code = yield* runHook(options.exec, {
              MLUP_STORAGE_DIR: to,
              MLUP_STORAGE_VERSION: String(version.version),
              MLUP_STORAGE_DIGEST: version.digest
            })
            if (code !== 0) {
              yield* Effect.logWarning(`--exec exited with ${code} after version ${version.version}; watching goes on`)
            }
          }
        })
      ),
      Effect.provideService(Storage.Storage, options.storage)
    )
  })
