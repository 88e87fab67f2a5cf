/**
 * A folder's names, as the Node wiring lists them: without sorting. Node's
 * `readdir` is libuv's scandir, which sorts every name (alphasort, by the
 * locale's collation) before it hands them over; the storages sort only what
 * their mask selected. Measured on 100,000 names (tmpfs, this project's
 * benchmark machine): `readdirSync` 108–250 ms, an `opendirSync` read loop
 * 70–190 ms in the same runs; Python's `os.listdir` (no sort) 78–82 ms.
 * Absent on other platforms, where `FileSystem.readDirectory` lists.
 *
 * @internal
 */
import * as PlatformError from "@effect/platform/Error"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"

/** @internal */
export class Listing extends Context.Tag("mlup-storage/internal/Listing")<Listing, {
  readonly names: (folder: string) => Effect.Effect<ReadonlyArray<string>, PlatformError.PlatformError>
}>() {}

const reasonOf = (code: string | undefined): PlatformError.SystemErrorReason =>
  code === "ENOENT"
    ? "NotFound"
    : code === "EACCES" || code === "EPERM"
    ? "PermissionDenied"
    : code === "ENOTDIR"
    ? "BadResource"
    : "Unknown"

/**
 * Node's listing: one synchronous read loop over the folder's entries
 * (readdir(3) in batches, unsorted), its failure as the platform's error.
 *
 * @internal
 */
export const node: Listing["Type"] = {
  names: (folder) =>
    Effect.try({
      try: () => {
        const dir = fs.opendirSync(folder, { bufferSize: 1024 })
        const names: Array<string> = []
        try {
          for (let entry = dir.readSync(); entry !== null; entry = dir.readSync()) names.push(entry.name)
        } finally {
          dir.closeSync()
        }
        return names
      },
      catch: (error) => {
        const code = (error as NodeJS.ErrnoException).code
        return new PlatformError.SystemError({
          reason: reasonOf(code),
          module: "FileSystem",
          method: "readDirectory",
          pathOrDescriptor: folder,
          ...(code === undefined ? {} : { syscall: (error as NodeJS.ErrnoException).syscall, description: String((error as Error).message) }),
          cause: error
        })
      }
    })
}
