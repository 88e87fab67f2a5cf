import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as LoadedFile from "../LoadedFile.js"
import * as StorageError from "../StorageError.js"
import * as errors from "./errors.js"
import * as release from "./release.js"
import * as storage from "./storage.js"

/** How much one read asks for: large enough to stream at disk speed, small enough to interrupt promptly. */
const readChunkSize = 8 * 1024 * 1024

/**
 * Reads a file into one buffer of its size, allocated once and read into in
 * place. The descriptor is closed as soon as the read ends; the buffer is
 * released when the caller's scope closes (or at once, on failure or
 * interruption).
 *
 * @internal
 */
export const readBytes = (fs: FileSystem.FileSystem, path: Path.Path) =>
(
  file: string,
  name: string = path.basename(file)
): Effect.Effect<LoadedFile.Bytes, StorageError.StorageError, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (outer) =>
    Effect.scoped(Effect.gen(function*() {
      const handle = yield* Effect.mapError(fs.open(file, { flag: "r" }), errors.fromPlatformError(file, "open"))
      const info = yield* Effect.mapError(handle.stat, errors.fromPlatformError(file, "stat"))
      if (info.type === "Directory") {
        return yield* new StorageError.ReadFailed({ path: file, operation: "read", reason: "it is a folder, not a file" })
      }
      const size = Number(info.size)
      const bytes = yield* Scope.extend(release.allocateScoped(size), outer)
      let offset = 0
      while (offset < size) {
        const chunk = bytes.subarray(offset, Math.min(size, offset + readChunkSize))
        // Each read completes before an interruption takes effect, so no read
        // is still writing into the buffer when it is released.
        const read = yield* Effect.uninterruptible(
          Effect.mapError(handle.read(chunk), errors.fromPlatformError(file, "read"))
        )
        if (read === BigInt(0)) break
        offset += Number(read)
      }
      if (offset !== size) {
        return yield* new StorageError.ReadFailed({
          path: file,
          operation: "read",
          reason: `the file changed while it was read (${offset} of ${size} bytes)`
        })
      }
      return yield* Scope.extend(LoadedFile.bytes({ path: file, name, bytes }), outer)
    })))

/**
 * The storage a cache-backed source makes (S3, GCS, Azure, the Hub): each
 * cached file handed over by path, or read into bytes (`need_load_file`);
 * `loadBytesSingleFile` hands over a local file (one this storage delivered,
 * say) the same way.
 *
 * @internal
 */
export const cachedStorage = (options: {
  readonly storageType: string
  readonly fs: FileSystem.FileSystem
  readonly path: Path.Path
  readonly needLoadFile: boolean
  readonly load: Effect.Effect<
    ReadonlyArray<{ readonly file: string; readonly name: string; readonly size: number }>,
    StorageError.StorageError,
    Scope.Scope
  >
}): Effect.Effect<storage.Service> => {
  const { fs, path } = options
  const read = readBytes(fs, path)
  const deliver = (
    file: { readonly file: string; readonly name: string; readonly size: number }
  ): Effect.Effect<LoadedFile.LoadedFile, StorageError.StorageError, Scope.Scope> =>
    options.needLoadFile
      ? read(file.file, file.name)
      : Effect.succeed(LoadedFile.path({ path: file.file, name: file.name, size: file.size }))
  return storage.make({
    storageType: options.storageType,
    load: Effect.flatMap(options.load, (files) => Effect.forEach(files, deliver)),
    loadBytesSingleFile: (file) =>
      Effect.gen(function*() {
        const target = path.resolve(file)
        const info = yield* Effect.mapError(fs.stat(target), errors.fromPlatformError(target, "stat"))
        return yield* deliver({ file: target, name: path.basename(target), size: Number(info.size) })
      })
  })
}
