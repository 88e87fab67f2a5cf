import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as LoadedFile from "../LoadedFile.js"
import * as StorageError from "../StorageError.js"
import * as errors from "./errors.js"
import type * as options_ from "./options.js"
import * as release from "./release.js"
import * as storage from "./storage.js"
import * as unpacking from "./unpacking.js"

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
  name: string = path.basename(file),
  /** The caller reserved the file's size from the `MemoryBudget` already (with the other files of its load). */
  options: { readonly reserved?: boolean } = {}
): Effect.Effect<LoadedFile.Bytes, StorageError.StorageError, Scope.Scope> =>
  // The buffer and its share of the memory budget are the caller's scope's (a load that fails
  // releases them at once: `Storage.make` runs every load in a scope of its own).
  Effect.flatMap(Effect.scope, (outer) =>
    Effect.scoped(Effect.gen(function*() {
      const handle = yield* Effect.mapError(fs.open(file, { flag: "r" }), errors.fromPlatformError(file, "open"))
      const info = yield* Effect.mapError(handle.stat, errors.fromPlatformError(file, "stat"))
      if (info.type === "Directory") {
        return yield* new StorageError.ReadFailed({ path: file, operation: "read", reason: "it is a folder, not a file" })
      }
      const size = Number(info.size)
      if (options.reserved !== true) yield* Scope.extend(release.reserve(size, { location: file }), outer)
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
 * The files of one load, handed over by path, or read into memory
 * (`needLoadFile`) once the size of them all is reserved from the
 * `MemoryBudget` (one reservation for the load: they are held together).
 *
 * @internal
 */
export const deliverAll = (fs: FileSystem.FileSystem, path: Path.Path, needLoadFile: boolean) => {
  const read = readBytes(fs, path)
  return (
    files: ReadonlyArray<{ readonly file: string; readonly name: string; readonly size: number }>
  ): Effect.Effect<Array<LoadedFile.LoadedFile>, StorageError.StorageError, Scope.Scope> =>
    Effect.flatMap(release.readsBytes(needLoadFile), (bytes): Effect.Effect<Array<LoadedFile.LoadedFile>, StorageError.StorageError, Scope.Scope> =>
      bytes
        ? Effect.zipRight(
          release.reserve(files.reduce((sum, file) => sum + file.size, 0), {
            location: files.length === 1 ? files[0]!.file : `${files.length} files (${files[0]?.file ?? ""}, …)`
          }),
          Effect.forEach(files, (file) => read(file.file, file.name, { reserved: true }))
        )
        : Effect.succeed(files.map((file) => LoadedFile.path({ path: file.file, name: file.name, size: file.size }))))
}

/**
 * The storage of a remote source on the engine (S3, GCS, Azure, the Hub):
 * each cached file handed over by path, or read into bytes
 * (`need_load_file`), or, with the cache off, each file fetched straight
 * into memory. `loadBytesSingleFile` fetches a location of the source into
 * memory (cache off), or hands over a local file (one this storage
 * delivered, say) as `load` would.
 *
 * @internal
 */
export const remoteStorage = (
  storageType: string,
  kwargs: options_.TransferKwargs,
  work: {
    readonly load: Effect.Effect<ReadonlyArray<unpacking.Delivered>, StorageError.StorageError, Scope.Scope>
    /** Unpacks the archives it delivers (undefined: none are). */
    readonly unpacker: unpacking.Unpacker | undefined
    /** The files the source makes of those it fetched (an image's path from its layers), before unpacking. */
    readonly compose?: ((files: ReadonlyArray<unpacking.Delivered>) => Effect.Effect<ReadonlyArray<unpacking.Delivered>, StorageError.StorageError>) | undefined
    readonly loadBytes: Effect.Effect<ReadonlyArray<LoadedFile.Bytes>, StorageError.StorageError, Scope.Scope>
    readonly loadBytesOf: (
      location: string
    ) => Option.Option<Effect.Effect<LoadedFile.Bytes, StorageError.StorageError, Scope.Scope>>
  },
  /** What selects among the files of the archives it unpacks: the storage's mask (undefined: every file). */
  contents: { readonly mask: RegExp | undefined; readonly maskField: string }
): Effect.Effect<storage.Service, never, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const unpack = unpacking.stage(work.unpacker, storageType, contents)
    const compose = work.compose ?? Effect.succeed
    const deliver = (files: ReadonlyArray<unpacking.Delivered>) =>
      Effect.flatMap(Effect.flatMap(compose(files), unpack), deliverAll(fs, path, kwargs.need_load_file))
    const local = (file: string) =>
      Effect.gen(function*() {
        const target = path.resolve(file)
        const info = yield* Effect.mapError(fs.stat(target), errors.fromPlatformError(target, "stat"))
        const [delivered] = yield* deliverAll(fs, path, kwargs.need_load_file)([
          { file: target, name: path.basename(target), size: Number(info.size) }
        ])
        return delivered!
      })
    return yield* storage.make({
      storageType,
      // A load that fails leaves nothing unpacked for it behind (archives followed as they arrived).
      load: kwargs.cache
        ? Effect.flatMap(Effect.onError(work.load, () => work.unpacker?.discardPending ?? Effect.void), deliver)
        : work.loadBytes,
      loadBytesSingleFile: (file) =>
        kwargs.cache ? local(file) : Option.getOrElse(work.loadBytesOf(file), () => local(file))
    })
  })
