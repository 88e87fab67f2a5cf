import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as LoadedFile from "../../LoadedFile.js"
import * as StorageError from "../../StorageError.js"
import * as errors from "../errors.js"

/** One delivered file, as the command line reports it. @internal */
export interface Delivered {
  readonly name: string
  /** Where the file is on disk: in `--to DIR`, or where the storage keeps it (the source of bytes read into memory). */
  readonly path: string
  readonly size: number
  readonly kind: "path" | "bytes"
  readonly sha256?: string
}

/** @internal */
export type Source = Delivered & { readonly file: LoadedFile.Path | LoadedFile.Bytes }

/** The files of a load, as delivered (before any placing). @internal */
export const describe = (files: ReadonlyArray<LoadedFile.LoadedFile>): Effect.Effect<Array<Source>> =>
  Effect.forEach(files, (file): Effect.Effect<Source> =>
    file._tag === "Model"
      ? Effect.dieMessage("the command line cannot deliver a model held in memory")
      : Effect.succeed({
        name: file.name,
        path: file.path,
        size: file.size,
        kind: file._tag === "Path" ? "path" : "bytes",
        file
      }))

/**
 * Places the files in `dir`: each is copied (or written, for bytes) into a
 * staging folder inside `dir`, then, once all are complete, each is renamed
 * into place, so that no file in `dir` is ever partial. The staging folder is
 * removed when the scope closes, whatever happened.
 *
 * @internal
 */
export const placeAll = (
  files: ReadonlyArray<Source>,
  dir: string
): Effect.Effect<Array<Delivered>, StorageError.WriteFailed | LoadedFile.BytesReleasedError, FileSystem.FileSystem | Path.Path> =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const root = path.resolve(dir)
    yield* fs.makeDirectory(root, { recursive: true }).pipe(Effect.mapError(errors.writeFailed(root, "create")))
    const staging = yield* fs.makeTempDirectoryScoped({ directory: root, prefix: ".mlup-storage-staging-" }).pipe(
      Effect.mapError(errors.writeFailed(root, "create a staging folder in"))
    )
    const targetOf = (name: string) => {
      const target = path.resolve(root, name)
      const relative = path.relative(root, target)
      return relative === "" || relative.startsWith("..") || path.isAbsolute(relative) ? undefined : relative
    }
    const staged = yield* Effect.forEach(files, (file) =>
      Effect.gen(function*() {
        const relative = targetOf(file.name)
        if (relative === undefined) {
          return yield* new StorageError.WriteFailed({
            path: path.join(root, file.name),
            operation: "place",
            reason: "the file's name points outside the target folder"
          })
        }
        const at = path.join(staging, relative)
        yield* fs.makeDirectory(path.dirname(at), { recursive: true }).pipe(
          Effect.mapError(errors.writeFailed(path.dirname(at), "create"))
        )
        if (file.file._tag === "Path") {
          yield* fs.copyFile(file.file.path, at).pipe(Effect.mapError(errors.writeFailed(at, "copy to")))
        } else {
          const bytes = yield* LoadedFile.getBytes(file.file)
          yield* fs.writeFile(at, bytes).pipe(Effect.mapError(errors.writeFailed(at, "write")))
        }
        return { file, at, relative }
      }), { concurrency: 4 })
    // Every file is complete: now each is moved into place (a rename: atomic).
    return yield* Effect.forEach(staged, ({ at, file, relative }) =>
      Effect.gen(function*() {
        const target = path.join(root, relative)
        yield* fs.makeDirectory(path.dirname(target), { recursive: true }).pipe(
          Effect.mapError(errors.writeFailed(path.dirname(target), "create"))
        )
        yield* fs.rename(at, target).pipe(Effect.mapError(errors.writeFailed(target, "move into place")))
        const { file: _file, ...delivered } = file
        return { ...delivered, path: target }
      }))
  }))

/**
 * The sha256 of a delivered file (read from disk, or from its bytes).
 *
 * @internal
 */
export const sha256 = (
  delivered: Delivered & { readonly file?: LoadedFile.Path | LoadedFile.Bytes }
): Effect.Effect<
  string,
  StorageError.ReadFailed | StorageError.PathNotFound | StorageError.PermissionDenied | LoadedFile.BytesReleasedError,
  FileSystem.FileSystem
> =>
  Effect.gen(function*() {
    const hash = crypto.createHash("sha256")
    if (delivered.file?._tag === "Bytes") {
      hash.update(yield* LoadedFile.getBytes(delivered.file))
    } else {
      const fs = yield* FileSystem.FileSystem
      yield* fs.stream(delivered.path, { chunkSize: 1024 * 1024 }).pipe(
        Stream.runForEach((chunk) => Effect.sync(() => hash.update(chunk))),
        Effect.mapError(errors.fromPlatformError(delivered.path, "read"))
      )
    }
    return hash.digest("hex")
  })
