/**
 * Durable writes: flushes, renames into place, records written atomically or
 * as hints, reads of records, removals.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as crypto from "node:crypto"
import * as nodeFsSync from "node:fs"
import * as StorageError from "../../StorageError.js"
import * as errors from "../errors.js"

// The cache's small metadata operations (lock files, records, renames, stats)
// are synchronous system calls: each takes microseconds on a local disk,
// where the thread pool's round trip for an asynchronous one cost 100-250 us
// of the event loop's time on the machine the benchmark ran on (2,000 small
// files made some 40 of them each). Flushes (fsync), which may take
// milliseconds, and file contents stay asynchronous.

/** Runs one synchronous file-system call; its error, when it throws, is Node's own. @internal */
export const call = <A>(f: () => A): Effect.Effect<A, NodeJS.ErrnoException> =>
  Effect.try({ try: f, catch: (error) => error as NodeJS.ErrnoException })

const fsyncOf = (fd: number): Effect.Effect<void, NodeJS.ErrnoException> =>
  Effect.async<void, NodeJS.ErrnoException>((resume) => {
    nodeFsSync.fsync(fd, (error) => resume(error === null ? Effect.void : Effect.fail(error)))
    // An fsync under way cannot be called back: interrupted, its result is dropped (the caller closes the fd).
    return Effect.void
  })

/**
 * Flushes a file (or a folder's entries) to the device: fsync. A folder that
 * cannot be opened for it, or flushed (some platforms), is skipped.
 *
 * @internal
 */
export const sync = (target: string): Effect.Effect<void, StorageError.WriteFailed> =>
  Effect.async<void, NodeJS.ErrnoException>((resume) => {
    let fd: number
    try {
      fd = nodeFsSync.openSync(target, "r")
    } catch (error) {
      return resume(Effect.fail(error as NodeJS.ErrnoException))
    }
    // One round trip through the thread pool; the descriptor is closed whatever happens (an fsync
    // under way cannot be called back: interrupted, its result is dropped).
    nodeFsSync.fsync(fd, (error) => {
      try {
        nodeFsSync.closeSync(fd)
      } catch {
        // Closed or not, the flush told its result.
      }
      resume(error === null ? Effect.void : Effect.fail(error))
    })
  }).pipe(
    Effect.catchIf((error) => error.code === "EISDIR" || error.code === "EINVAL" || error.code === "EBADF", () => Effect.void),
    Effect.mapError(errors.writeFailed(target, "flush (fsync)"))
  )

/**
 * Moves a complete file into place so that it survives a power loss: the file
 * is flushed before the rename, its folder after.
 *
 * @internal
 */
export const commit = (
  from: string,
  to: string,
  options?: {
    /** false: the caller flushes the folder itself, after its next rename in it. */
    readonly syncFolder?: boolean
    /** true: the file was flushed as it was closed (not flushed again). */
    readonly flushed?: boolean
  }
): Effect.Effect<void, StorageError.WriteFailed> =>
  (options?.flushed === true ? Effect.void : sync(from)).pipe(
    Effect.zipRight(Effect.mapError(call(() => nodeFsSync.renameSync(from, to)), errors.writeFailed(to, "rename into place"))),
    Effect.zipRight(options?.syncFolder === false ? Effect.void : sync(dirname(to)))
  )

const dirname = (file: string): string => {
  const at = Math.max(file.lastIndexOf("/"), file.lastIndexOf("\\"))
  return at <= 0 ? (at === 0 ? file.slice(0, 1) : ".") : file.slice(0, at)
}

/**
 * Writes JSON so that a reader sees the old content or the new, never a part,
 * and so that it survives a power loss (written and flushed under another
 * name, renamed, folder flushed).
 *
 * @internal
 */
export const writeJsonAtomic = (
  file: string,
  value: unknown,
  options?: {
    /**
     * false: neither the file nor its folder is flushed (by the caller, or
     * not at all: for a record whose loss, or a cut, a reader survives).
     */
    readonly flush?: boolean
  }
): Effect.Effect<void, StorageError.WriteFailed> => {
  const temporary = `${file}.${crypto.randomUUID()}.tmp`
  const flush = options?.flush !== false
  // Unflushed, it is three synchronous calls in one step.
  if (!flush) {
    return Effect.mapError(
      call(() => {
        try {
          nodeFsSync.writeFileSync(temporary, JSON.stringify(value))
          nodeFsSync.renameSync(temporary, file)
        } catch (error) {
          nodeFsSync.rmSync(temporary, { force: true })
          throw error
        }
      }),
      errors.writeFailed(file, "write")
    )
  }
  return Effect.acquireUseRelease(
    call(() => nodeFsSync.openSync(temporary, "w")),
    (fd) =>
      Effect.zipRight(call(() => nodeFsSync.writeFileSync(fd, JSON.stringify(value))), flush ? fsyncOf(fd) : Effect.void),
    (fd) => Effect.ignore(call(() => nodeFsSync.closeSync(fd)))
  ).pipe(
    Effect.mapError(errors.writeFailed(file, "write")),
    Effect.zipRight(Effect.mapError(call(() => nodeFsSync.renameSync(temporary, file)), errors.writeFailed(file, "rename into place"))),
    Effect.zipRight(flush ? sync(dirname(file)) : Effect.void),
    Effect.tapError(() => removeAll(temporary))
  )
}

/**
 * Writes JSON that only speeds a later run up (a resume record), with three
 * system calls: not flushed, and a reader may find it cut short by a crash,
 * which `readJson` reads as none.
 *
 * @internal
 */
export const writeJsonHint = (file: string, value: unknown): Effect.Effect<void, StorageError.WriteFailed> =>
  Effect.mapError(call(() => nodeFsSync.writeFileSync(file, JSON.stringify(value))), errors.writeFailed(file, "write"))

/**
 * Reads a JSON file; none when it is missing or not valid JSON.
 *
 * @internal
 */
export const readJson = <A>(file: string): Effect.Effect<Option.Option<A>> =>
  // A missing file is the common case (a cold cache): asked first, as an exception costs more than a call.
  Effect.suspend(() =>
    nodeFsSync.existsSync(file)
      ? Effect.option(call(() => JSON.parse(nodeFsSync.readFileSync(file, "utf8")) as A))
      : Effect.succeedNone
  )

/**
 * Removes files (or folders), ignoring those already gone.
 *
 * @internal
 */
export const removeAll = (...files: ReadonlyArray<string>): Effect.Effect<void> =>
  Effect.sync(() => {
    for (const file of files) {
      // Missing (often: a record never written) is asked first, as an exception costs more than a call;
      // a file or link goes with one call, a folder the long way.
      const info = nodeFsSync.lstatSync(file, { throwIfNoEntry: false })
      if (info === undefined) continue
      try {
        if (info.isDirectory()) nodeFsSync.rmSync(file, { force: true, recursive: true })
        else nodeFsSync.unlinkSync(file)
      } catch {
        // Left behind: nothing trusts it (no record names it).
      }
    }
  })
