import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as crypto from "node:crypto"
import * as LoadedFile from "../LoadedFile.js"
import * as StorageError from "../StorageError.js"
import * as cache from "../internal/cache.js"
import * as errors from "../internal/errors.js"
import * as nodeFs from "node:fs/promises"

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
 * Places the files in `dir`, all of them or none:
 *
 * 1. Each is staged in a folder inside `dir` (so on the same file system):
 *    hard-linked from the cache when `link` is set and the cache is on the
 *    same file system (no second copy on disk), copied otherwise, written for
 *    bytes; then flushed.
 * 2. Once every file is staged, the switch: each file already in `dir` under
 *    a new file's name is moved aside (into the staging folder), and the new
 *    one renamed into place. If any step fails, every step taken is undone in
 *    reverse, so `dir` is as it was. The switch is not interruptible (it takes
 *    a few renames).
 * 3. The folders are flushed; the staging folder (and what was moved aside)
 *    is removed when the scope closes, whatever happened.
 *
 * A name that leaves `dir`, two files with one name, a folder on the way
 * that is a symbolic link (never followed out of `dir`), and a folder where a
 * file goes (the user's: never moved or removed) fail before anything is
 * written.
 *
 * With `retire` (the names an earlier placing put there, for `--watch`), the
 * files of those names that this placing does not deliver are moved aside in
 * the same switch (a folder, or a name outside `dir`, is left alone), and the
 * folders inside `dir` that they leave empty are removed after it (a folder
 * that holds anything else, the user's files among them, stays); with
 * `record`, a file of that name listing the names placed is switched in with
 * them (the next placing's `retire`).
 *
 * @internal
 */
export const placeAll = (
  files: ReadonlyArray<Source>,
  dir: string,
  options: {
    readonly link: boolean
    readonly retire?: ReadonlyArray<string> | undefined
    readonly record?: string | undefined
  } = { link: false }
): Effect.Effect<Array<Delivered>, StorageError.WriteFailed | LoadedFile.BytesReleasedError, FileSystem.FileSystem | Path.Path> =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const root = path.resolve(dir)
    // What is at a path, without following a symbolic link ("none" when nothing is).
    const kindOf = (target: string) =>
      Effect.map(
        Effect.option(Effect.tryPromise(() => nodeFs.lstat(target))),
        (info): "none" | "link" | "folder" | "file" =>
          info._tag === "None"
            ? "none"
            : info.value.isSymbolicLink()
            ? "link"
            : info.value.isDirectory()
            ? "folder"
            : "file"
      )
    const refuse = (target: string, reason: string) =>
      new StorageError.WriteFailed({ path: target, operation: "place", reason })
    // A folder where a file goes is the user's: it is never moved, replaced or removed.
    const takenByFolder = (target: string, name: string) =>
      refuse(
        target,
        `is a folder, where the file ${name} goes: nothing in it was changed (move or rename the folder, or choose another --to)`
      )
    yield* fs.makeDirectory(root, { recursive: true }).pipe(Effect.mapError(errors.writeFailed(root, "create", "target")))

    // Every name is checked before anything is written.
    const seen = new Set<string>()
    const planned: Array<{ readonly file: Source; readonly relative: string }> = []
    for (const file of files) {
      const target = path.resolve(root, file.name)
      const relative = path.relative(root, target)
      if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative)) {
        return yield* refuse(path.join(root, file.name), "the file's name points outside the target folder")
      }
      if (seen.has(relative)) {
        return yield* refuse(target, `two files are delivered under this name (${file.name}): nothing was placed`)
      }
      seen.add(relative)
      // No folder on the way may be a symbolic link: it would lead out of the target folder.
      const segments = relative.split(path.sep)
      for (let i = 1; i < segments.length; i++) {
        const folder = path.join(root, ...segments.slice(0, i))
        if ((yield* kindOf(folder)) === "link") {
          return yield* refuse(folder, "is a symbolic link: files are never written through one (remove it)")
        }
      }
      if ((yield* kindOf(target)) === "folder") return yield* takenByFolder(target, file.name)
      planned.push({ file, relative })
    }
    if (options.record !== undefined && seen.has(options.record)) {
      return yield* refuse(path.join(root, options.record), "a file is delivered under the name of the record of what was placed: nothing was placed")
    }
    // What an earlier placing put there and this one does not deliver: only files, only inside `dir`, never
    // through a symbolic link.
    const retired: Array<string> = []
    for (const name of options.retire ?? []) {
      const relative = path.relative(root, path.resolve(root, name))
      if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative) || seen.has(relative)) continue
      if (relative === options.record) continue
      const segments = relative.split(path.sep)
      let linked = false
      for (let i = 1; i < segments.length && !linked; i++) {
        linked = (yield* kindOf(path.join(root, ...segments.slice(0, i)))) === "link"
      }
      if (!linked && (yield* kindOf(path.join(root, relative))) === "file") retired.push(relative)
    }

    const staging = yield* fs.makeTempDirectoryScoped({ directory: root, prefix: ".mlup-storage-staging-" }).pipe(
      Effect.mapError(errors.writeFailed(root, "create a staging folder in", "target"))
    )
    const makeParent = (file: string) =>
      fs.makeDirectory(path.dirname(file), { recursive: true }).pipe(
        Effect.mapError(errors.writeFailed(path.dirname(file), "create", "target"))
      )
    const staged = yield* Effect.forEach(planned, ({ file, relative }) =>
      Effect.gen(function*() {
        const at = path.join(staging, "new", relative)
        yield* makeParent(at)
        if (file.file._tag === "Path") {
          const source = file.file.path
          const linked = options.link ? yield* Effect.isSuccess(fs.link(source, at)) : false
          if (!linked) yield* fs.copyFile(source, at).pipe(Effect.mapError(errors.writeFailed(at, "copy to", "target")))
        } else {
          const bytes = yield* LoadedFile.getBytes(file.file)
          yield* fs.writeFile(at, bytes).pipe(Effect.mapError(errors.writeFailed(at, "write", "target")))
        }
        yield* cache.sync(at)
        return { file, at, relative, target: path.join(root, relative) }
      }), { concurrency: 4 })
    // The record of the names placed, switched in with them.
    const record = options.record === undefined ? undefined : yield* Effect.gen(function*() {
      const relative = options.record!
      const at = path.join(staging, "record", relative)
      yield* makeParent(at)
      const names = planned.map((one) => one.relative)
      yield* fs.writeFileString(at, JSON.stringify({ names }, null, 2) + "\n").pipe(
        Effect.mapError(errors.writeFailed(at, "write", "target"))
      )
      yield* cache.sync(at)
      return { at, relative, target: path.join(root, relative), file: { name: relative } }
    })

    // The switch: all or nothing.
    const undo: Array<Effect.Effect<void>> = []
    const step = (
      from: string,
      to: string,
      operation: string
    ) =>
      fs.rename(from, to).pipe(
        Effect.mapError(errors.writeFailed(to, operation, "target")),
        Effect.tap(() => Effect.sync(() => undo.push(Effect.ignore(fs.rename(to, from)))))
      )
    const switchAll = Effect.forEach([...staged, ...(record === undefined ? [] : [record])], ({ at, file, relative, target }) =>
      Effect.gen(function*() {
        yield* makeParent(target)
        const kind = yield* kindOf(target)
        // Checked again here: a folder may have appeared since the names were checked.
        if (kind === "folder") return yield* takenByFolder(target, file.name)
        if (kind !== "none") {
          const aside = path.join(staging, "previous", relative)
          yield* makeParent(aside)
          yield* step(target, aside, "move the previous version aside of")
        }
        yield* step(at, target, "move into place")
      }), { discard: true }).pipe(
        Effect.zipRight(Effect.forEach(retired, (relative) =>
          Effect.gen(function*() {
            const aside = path.join(staging, "retired", relative)
            yield* makeParent(aside)
            yield* step(path.join(root, relative), aside, "move the previous version aside of")
          }), { discard: true }))
      )
    yield* Effect.uninterruptible(
      switchAll.pipe(
        Effect.tapError(() =>
          Effect.gen(function*() {
            for (const action of undo.reverse()) yield* action
          })
        )
      )
    )
    // The folders the retired files leave empty, deepest first, up to `dir` (not included): removed
    // one by one with rmdir, which removes only an empty folder (never the user's files, never a
    // link); the first that is not empty, or cannot be removed, ends the walk up.
    const emptied = new Set<string>()
    for (const relative of retired) {
      for (let folder = path.dirname(relative); folder !== "." && folder !== path.sep; folder = path.dirname(folder)) {
        const removed = yield* Effect.promise(() => nodeFs.rmdir(path.join(root, folder)).then(() => true, () => false))
        if (!removed) break
        emptied.add(path.dirname(path.join(root, folder)))
      }
    }
    const folders = new Set([
      root,
      ...staged.map(({ target }) => path.dirname(target)),
      // (a folder removed just above is no longer there to flush: its parent, in `emptied`, is)
      ...retired.map((relative) => path.dirname(path.join(root, relative))),
      ...emptied
    ])
    yield* Effect.forEach(folders, (folder) => Effect.ignore(cache.sync(folder)), { discard: true })
    return staged.map(({ file, target }) => {
      const { file: _file, ...delivered } = file
      return { ...delivered, path: target }
    })
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
      yield* cache.hashInto(yield* FileSystem.FileSystem, delivered.path, hash)
    }
    return hash.digest("hex")
  })
