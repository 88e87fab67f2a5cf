import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as crypto from "node:crypto"
import * as os from "node:os"
import type * as StorageError from "../StorageError.js"
import * as errors from "./errors.js"

/**
 * The cache folder when none is given: `$MLUP_STORAGE_CACHE`, else
 * `$XDG_CACHE_HOME/mlup-storage`, else `~/.cache/mlup-storage`.
 *
 * @internal
 */
export const defaultCacheDir = (path: Path.Path): string =>
  process.env["MLUP_STORAGE_CACHE"] ??
    path.join(process.env["XDG_CACHE_HOME"] ?? path.join(os.homedir(), ".cache"), "mlup-storage")

/**
 * A short, stable, file-name-safe key for a remote location.
 *
 * @internal
 */
export const keyOf = (...parts: ReadonlyArray<string>): string =>
  crypto.createHash("sha256").update(parts.join("\u0000")).digest("hex").slice(0, 32)

/**
 * A name that is safe as a single path segment.
 *
 * @internal
 */
export const safeName = (name: string): string => {
  const cleaned = name.replace(/[/\\\u0000]/g, "_")
  return cleaned === "" || cleaned === "." || cleaned === ".." ? "file" : cleaned
}

/**
 * Writes JSON so that a reader sees the old content or the new, never a part.
 *
 * @internal
 */
export const writeJsonAtomic = (fs: FileSystem.FileSystem, file: string, value: unknown) => {
  const temporary = `${file}.${crypto.randomUUID()}.tmp`
  return fs.writeFileString(temporary, JSON.stringify(value)).pipe(
    Effect.zipRight(fs.rename(temporary, file)),
    Effect.tapError(() => Effect.ignore(fs.remove(temporary))),
    Effect.mapError(errors.writeFailed(file, "write"))
  )
}

/**
 * Reads a JSON file; none when it is missing or not valid JSON.
 *
 * @internal
 */
export const readJson = <A>(fs: FileSystem.FileSystem, file: string): Effect.Effect<Option.Option<A>> =>
  fs.readFileString(file).pipe(
    Effect.flatMap((text) => Effect.try(() => JSON.parse(text) as A)),
    Effect.option
  )

/**
 * Removes files, ignoring those already gone.
 *
 * @internal
 */
export const removeAll = (fs: FileSystem.FileSystem, ...files: ReadonlyArray<string>): Effect.Effect<void> =>
  Effect.forEach(files, (file) => Effect.ignore(fs.remove(file, { force: true, recursive: true })), {
    discard: true
  })

interface LockContent {
  readonly pid: number
  readonly host: string
  readonly token: string
}

/** How often the holder touches its lock, and after how long a lock of another host is stale. */
const heartbeat = Duration.seconds(2)
const staleAfterOnOtherHost = Duration.seconds(30)

const processIsAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as { code?: string }).code === "EPERM"
  }
}

/**
 * An exclusive lock on a cache entry, across fibers and processes: a file
 * created with O_EXCL that names its holder. A lock whose holder died (same
 * host: its pid is gone; another host: no heartbeat for 30 s) is taken over,
 * not waited on. Released when the scope closes. Succeeds with whether it had
 * to wait for another holder.
 *
 * @internal
 */
export const lock = (
  fs: FileSystem.FileSystem,
  file: string,
  location: string
): Effect.Effect<{ readonly waited: boolean }, StorageError.WriteFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const content: LockContent = { pid: process.pid, host: os.hostname(), token: crypto.randomUUID() }
    const text = JSON.stringify(content)

    // One atomic attempt: the finalizer is registered only if the file was created.
    const tryCreate = Effect.uninterruptible(
      fs.writeFileString(file, text, { flag: "wx" }).pipe(
        Effect.as(true),
        Effect.catchIf(
          (error) => error._tag === "SystemError" && error.reason === "AlreadyExists",
          () => Effect.succeed(false)
        ),
        Effect.mapError(errors.writeFailed(file, "create the lock")),
        Effect.tap((created) =>
          created
            ? Effect.addFinalizer(() =>
              // Only our own lock is removed (a holder presumed dead may have been replaced).
              readJson<LockContent>(fs, file).pipe(
                Effect.flatMap((held) =>
                  Option.isSome(held) && held.value.token === content.token ? removeAll(fs, file) : Effect.void
                )
              )
            )
            : Effect.void
        )
      )
    )

    const isStale = Effect.gen(function*() {
      const held = yield* readJson<LockContent>(fs, file)
      if (Option.isNone(held)) return Option.none<string>()
      const { host, pid } = held.value
      if (host === content.host) return processIsAlive(pid) ? Option.none() : Option.some(JSON.stringify(held.value))
      const info = yield* Effect.option(fs.stat(file))
      const modified = Option.flatMap(info, (info) => info.mtime)
      const age = Option.match(modified, { onNone: () => 0, onSome: (mtime) => Date.now() - mtime.getTime() })
      return age > Duration.toMillis(staleAfterOnOtherHost) ? Option.some(JSON.stringify(held.value)) : Option.none()
    })

    // Takes a dead holder's lock out of the way: moved aside atomically, then
    // checked to be the one judged stale (else put back: it is a new holder's).
    const takeOver = (stale: string) =>
      Effect.gen(function*() {
        const aside = `${file}.${crypto.randomUUID()}.stale`
        const moved = yield* Effect.option(fs.rename(file, aside))
        if (Option.isNone(moved)) return
        const taken = yield* readJson<LockContent>(fs, aside)
        if (Option.isSome(taken) && JSON.stringify(taken.value) !== stale) {
          yield* Effect.ignore(fs.link(aside, file))
        }
        yield* removeAll(fs, aside)
        yield* Effect.logWarning(`Took over the lock of ${location} from a process that is gone (${stale})`)
      })

    let waited = false
    while (!(yield* tryCreate)) {
      const stale = yield* isStale
      if (Option.isSome(stale)) {
        yield* takeOver(stale.value)
        continue
      }
      if (!waited) yield* Effect.logInfo(`Waiting for another process or fiber that is fetching ${location}`)
      waited = true
      yield* Effect.sleep(Duration.millis(40 + Math.floor(Math.random() * 60)))
    }
    // The heartbeat tells processes on other hosts that the holder is alive.
    yield* Effect.forkScoped(
      Effect.repeat(
        Effect.ignore(Effect.suspend(() => fs.utimes(file, new Date(), new Date()))),
        Schedule.spaced(heartbeat)
      )
    )
    return { waited }
  })

/**
 * Makes a folder (and its parents).
 *
 * @internal
 */
export const ensureDir = (fs: FileSystem.FileSystem, dir: string): Effect.Effect<void, StorageError.WriteFailed> =>
  Effect.mapError(fs.makeDirectory(dir, { recursive: true }), errors.writeFailed(dir, "create the folder"))
