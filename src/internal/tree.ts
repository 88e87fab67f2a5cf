/**
 * Writing an unpacked tree on Node, shared by the archive readers (tar, zip):
 * one file from an entry's bytes (counted before they are written, the entry
 * paused while the file catches up), and the links once the whole listing
 * was checked by the rules of `unpack.ts`.
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as fs from "node:fs"
import * as path from "node:path"
import * as unpack from "./unpack.js"

/** An entry's bytes as the readers give them (node-tar's Minipass entries, yauzl's Readables). @internal */
export interface Bytes {
  on(event: "data" | "end", listener: (chunk?: Buffer) => void): unknown
  pause(): unknown
  resume(): unknown
}

/**
 * One file of the tree from `bytes`: each chunk told to `count` first (which
 * answers false to stop: a limit was reached), then written; the entry is
 * paused while the file catches up. Its folders are made. `closed` settles
 * once the file is closed (or failed); `destroy` stops it.
 *
 * @internal
 */
export const writeFile = (bytes: Bytes, target: string, mode: number, count: (bytes: number) => boolean) => {
  fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 })
  // Flushed as it is closed: a tree is renamed into place only once its bytes are on the device.
  const file = fs.createWriteStream(target, { mode, flush: true, highWaterMark: 4 * 1024 * 1024 })
  // One consumer of the entry: a second one beside a pipe would miss the first chunks.
  bytes.on("data", (chunk?: Buffer) => {
    if (chunk === undefined || !count(chunk.byteLength)) return
    if (!file.write(chunk)) bytes.pause()
  })
  file.on("drain", () => bytes.resume())
  bytes.on("end", () => file.end())
  // Listened to at once: a file may close before the files written before it.
  const closed = new Promise<void>((resolve, reject) => {
    file.on("error", reject)
    file.on("close", resolve)
  })
  closed.catch(() => {})
  return { closed, destroy: () => void file.destroy() }
}

/**
 * The links of the tree, made once the listing was checked (`guard.finish`):
 * a symbolic link as the archive wrote it, a hard link to the file it names
 * from the archive's root. Throws on a failure (the caller removes the tree).
 *
 * @internal
 */
export const makeLinks = (folder: string, admitted: ReadonlyArray<unpack.Admitted>): void => {
  for (const { entry, path: inside } of admitted) {
    if (entry.type !== "symlink" && entry.type !== "hardlink") continue
    const target = path.join(folder, inside)
    fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 })
    if (entry.type === "symlink") fs.symlinkSync(entry.target!, target)
    else fs.linkSync(path.join(folder, Either.getOrThrow(unpack.pathOf(entry.target!))), target)
  }
}

/** Why an archive was not unpacked: a rule it broke, a failure to read it, or to write the tree. @internal */
export type Failure =
  | { readonly _tag: "Refused"; readonly refusal: unpack.Refusal }
  | { readonly _tag: "Broken"; readonly reason: string }
  | { readonly _tag: "Unwritable"; readonly reason: string; readonly code: string | undefined }

/** A failure to write the tree (a full disk, permissions). @internal */
export const unwritable = (what: string, error: unknown): Failure => ({
  _tag: "Unwritable",
  reason: `${what}: ${(error as Error).message}`,
  code: (error as NodeJS.ErrnoException).code
})

/**
 * The end of an archive's listing: the whole listing checked (links through
 * every link of the tree), then the links made. A failure, or none.
 *
 * @internal
 */
export const complete = (
  guard: ReturnType<typeof unpack.guard>,
  folder: string,
  admitted: ReadonlyArray<unpack.Admitted>
): Failure | undefined => {
  const checked = guard.finish()
  if (Either.isLeft(checked)) return { _tag: "Refused", refusal: checked.left }
  try {
    makeLinks(folder, admitted)
  } catch (error) {
    return unwritable("a link could not be made", error)
  }
  return undefined
}
