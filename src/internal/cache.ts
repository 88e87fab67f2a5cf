import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as nodeFsSync from "node:fs"
import * as nodeFs from "node:fs/promises"
import * as os from "node:os"
import { Worker } from "node:worker_threads"
import * as StorageError from "../StorageError.js"
import * as errors from "./errors.js"
import * as options_ from "./options.js"

/**
 * The cache folder when none is given: `$MLUP_STORAGE_CACHE`, else
 * `$XDG_CACHE_HOME/mlup-storage`, else `~/.cache/mlup-storage`.
 *
 * @internal
 */
export const defaultCacheDir = (path: Path.Path): Effect.Effect<string> =>
  Effect.gen(function*() {
    // Read through Effect's Config (the environment by default), so that an application's
    // ConfigProvider decides; an unreadable value counts as unset.
    const read = options_.envString
    const explicit = yield* read("MLUP_STORAGE_CACHE")
    if (Option.isSome(explicit)) return explicit.value
    const xdg = yield* read("XDG_CACHE_HOME")
    return path.join(Option.getOrElse(xdg, () => path.join(os.homedir(), ".cache")), "mlup-storage")
  })

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

// The cache's small metadata operations (lock files, records, renames, stats)
// are synchronous system calls: each takes microseconds on a local disk,
// where the thread pool's round trip for an asynchronous one cost 100-250 us
// of the event loop's time on the machine the benchmark ran on (2,000 small
// files made some 40 of them each). Flushes (fsync), which may take
// milliseconds, and file contents stay asynchronous.

/** Runs one synchronous file-system call; its error, when it throws, is Node's own. */
const call = <A>(f: () => A): Effect.Effect<A, NodeJS.ErrnoException> =>
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
  Effect.acquireUseRelease(
    call(() => nodeFsSync.openSync(target, "r")),
    fsyncOf,
    (fd) => Effect.ignore(call(() => nodeFsSync.closeSync(fd)))
  ).pipe(
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

/**
 * What a file is on disk, beyond its content: a verified file whose identity
 * is unchanged need not be hashed again. Any write (even one that restores the
 * mtime) changes the ctime.
 *
 * @internal
 */
export type Identity = string

/**
 * The identity of a file (size, mtime, inode, ctime, in nanoseconds); none
 * when it cannot be read.
 *
 * @internal
 */
export const identityOf = (file: string): Effect.Effect<Option.Option<Identity>> =>
  Effect.sync(() => {
    const info = nodeFsSync.statSync(file, { bigint: true, throwIfNoEntry: false })
    return info === undefined
      ? Option.none()
      : Option.some(`${info.size}:${info.mtimeNs}:${info.ino}:${info.ctimeNs}`)
  })

/**
 * The sha256 digests of a file, one per `partSize` bytes (one for the whole
 * file when `partSize` is its size): how a verified file is recorded, so that
 * parts downloaded in parallel are hashed as they arrive.
 *
 * @internal
 */
export const digestsOf = (
  fs: FileSystem.FileSystem,
  file: string,
  partSize: number
): Effect.Effect<ReadonlyArray<string>, StorageError.PathNotFound | StorageError.PermissionDenied | StorageError.ReadFailed> =>
  Effect.suspend(() => {
    const digests: Array<string> = []
    let hash = crypto.createHash("sha256")
    let inPart = 0
    return fs.stream(file, { chunkSize: 1024 * 1024 }).pipe(
      Stream.runForEach((chunk) =>
        Effect.sync(() => {
          let offset = 0
          while (offset < chunk.byteLength) {
            const take = Math.min(chunk.byteLength - offset, partSize - inPart)
            hash.update(chunk.subarray(offset, offset + take))
            offset += take
            inPart += take
            if (inPart === partSize) {
              digests.push(hash.digest("hex"))
              hash = crypto.createHash("sha256")
              inPart = 0
            }
          }
        })
      ),
      Effect.mapError(errors.fromPlatformError(file, "read")),
      Effect.map(() => {
        if (inPart > 0 || digests.length === 0) digests.push(hash.digest("hex"))
        return digests
      })
    )
  })

/**
 * Feeds a file (or `length` bytes of it from `start`) into a hash, 1 MiB at a
 * time, and succeeds with the hash.
 *
 * @internal
 */
export const hashInto = (
  fs: FileSystem.FileSystem,
  file: string,
  hash: crypto.Hash,
  range?: { readonly start: number; readonly length: number }
): Effect.Effect<crypto.Hash, StorageError.PathNotFound | StorageError.PermissionDenied | StorageError.ReadFailed> =>
  fs.stream(file, {
    chunkSize: 1024 * 1024,
    ...(range === undefined ? {} : { offset: range.start, bytesToRead: range.length })
  }).pipe(
    Stream.runForEach((chunk) => Effect.sync(() => hash.update(chunk))),
    Effect.mapError(errors.fromPlatformError(file, "read")),
    Effect.as(hash)
  )

/** Hashes ranges of one file, in the order they are given, 1 MiB at a time into one buffer. */
const rangeHasherCode = `
const { parentPort, workerData } = require("node:worker_threads")
const fs = require("node:fs")
const crypto = require("node:crypto")
const hash = crypto.createHash(workerData.algorithm)
if (workerData.preamble !== undefined) hash.update(workerData.preamble)
const buffer = Buffer.allocUnsafe(1024 * 1024)
let fd
let failure
parentPort.on("message", (message) => {
  if (message.end) {
    if (fd !== undefined) fs.closeSync(fd)
    parentPort.postMessage(failure === undefined ? { digest: hash.digest("hex") } : { error: failure })
    return
  }
  if (failure !== undefined) return
  try {
    if (fd === undefined) fd = fs.openSync(workerData.file, "r")
    let position = message.start
    const end = message.start + message.length
    while (position < end) {
      const read = fs.readSync(fd, buffer, 0, Math.min(buffer.length, end - position), position)
      if (read === 0) throw new Error("the file ends at " + position + ", before " + end)
      hash.update(buffer.subarray(0, read))
      position += read
    }
  } catch (error) {
    failure = String(error && error.message || error)
  }
})
`

/**
 * The sha256 of a file that is written in parts, computed in a worker thread
 * from the file itself as the parts are finished, so that neither the event
 * loop nor its heap carries it (measured on a 1 GiB download in parallel
 * parts: reading the parts back on the event loop cost 1.2 s of garbage
 * collection besides the hashing). `add` queues the next range (in file
 * order); `digest` waits for the last. The worker ends with the scope.
 *
 * @internal
 */
export const rangeHasher = (
  file: string,
  /** A node:crypto hash (default sha256), over `preamble` first (git's blob ids hash a header). */
  options: { readonly algorithm?: string | undefined; readonly preamble?: string | undefined } = {}
): Effect.Effect<
  {
    readonly add: (start: number, length: number) => void
    readonly digest: Effect.Effect<string, StorageError.ReadFailed>
  },
  never,
  Scope.Scope
> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => new Worker(rangeHasherCode, {
        eval: true,
        workerData: { file, algorithm: options.algorithm ?? "sha256", preamble: options.preamble }
      })),
      (worker) => Effect.promise(() => worker.terminate())
    ),
    (worker) => ({
      add: (start, length) => worker.postMessage({ start, length }),
      digest: Effect.async<string, StorageError.ReadFailed>((resume) => {
        const onMessage = (message: { readonly digest?: string; readonly error?: string }) =>
          resume(
            message.digest !== undefined
              ? Effect.succeed(message.digest)
              : Effect.fail(new StorageError.ReadFailed({ path: file, operation: "hash", reason: message.error ?? "unknown" }))
          )
        const onError = (error: Error) => resume(Effect.die(error))
        worker.once("message", onMessage)
        worker.once("error", onError)
        worker.postMessage({ end: true })
        // Interrupted: nothing more is listened for (the worker ends with the scope).
        return Effect.sync(() => {
          worker.off("message", onMessage)
          worker.off("error", onError)
        })
      })
    })
  )

/**
 * The sha256 of `length` bytes of a file from `start` (one part of it): what
 * a resume re-checks of the parts it keeps, without reading the others.
 *
 * @internal
 */
export const digestOfRange = (fs: FileSystem.FileSystem, file: string, start: number, length: number) =>
  Effect.map(
    Effect.suspend(() => hashInto(fs, file, crypto.createHash("sha256"), { start, length })),
    (hash) => hash.digest("hex")
  )

/**
 * What the cache recorded of a verified file.
 *
 * @internal
 */
export interface Verified {
  readonly size: number
  /** sha256 of each `partSize` bytes (a single digest: of the whole file). */
  readonly digests: ReadonlyArray<string>
  readonly partSize: number
  readonly identity?: Identity | undefined
}

/**
 * How a cached file is re-checked: `"changed"` re-hashes it when its identity
 * on disk differs from the recorded one, `"always"` on every load.
 *
 * @internal
 */
export type VerifyMode = "changed" | "always"

/**
 * Checks a cached file against what was recorded when it was verified.
 * Succeeds with the (possibly new) identity when the file is intact, fails
 * with the digests it has now when it is not: such a file is never delivered.
 *
 * @internal
 */
export const checkCached = (
  fs: FileSystem.FileSystem,
  file: string,
  recorded: Verified,
  mode: VerifyMode
): Effect.Effect<{ readonly identity: Identity; readonly rehashed: boolean }, { readonly actual: string }> =>
  Effect.gen(function*() {
    const identity = yield* identityOf(file)
    if (Option.isNone(identity)) return yield* Effect.fail({ actual: "no file" })
    if (!identity.value.startsWith(`${recorded.size}:`)) {
      return yield* Effect.fail({ actual: `a file of ${identity.value.split(":")[0]} bytes` })
    }
    if (mode === "changed" && recorded.identity === identity.value) {
      return { identity: identity.value, rehashed: false }
    }
    const digests = yield* Effect.orElseSucceed(digestsOf(fs, file, recorded.partSize), () => ["unreadable"])
    if (digests.join(",") !== recorded.digests.join(",")) {
      return yield* Effect.fail({ actual: digests.length === 1 ? digests[0]! : `parts ${digests.join(",")}` })
    }
    // Hashing read the file without changing it (the identity holds no atime): the identity stands.
    return { identity: identity.value, rehashed: true }
  })

/**
 * Fails with `InsufficientSpace` when the folder's file system has fewer than
 * `needed` bytes free (`reclaimable`: bytes the download will free first, a
 * partial file it replaces). Unknown free space (no statfs) passes.
 *
 * @internal
 */
export const ensureSpace = (
  dir: string,
  needed: number,
  reclaimable = 0
): Effect.Effect<void, StorageError.InsufficientSpace> =>
  Effect.gen(function*() {
    if (needed <= 0) return
    const stats = yield* Effect.option(call(() => nodeFsSync.statfsSync(dir)))
    if (Option.isNone(stats)) return
    const available = Number(stats.value.bavail) * Number(stats.value.bsize)
    if (available + reclaimable < needed) {
      return yield* new StorageError.InsufficientSpace({ path: dir, needed, available: available + reclaimable })
    }
  })

interface LockContent {
  readonly pid: number
  readonly host: string
  readonly token: string
  readonly since: number
}

/**
 * How often the holder touches its lock (the heartbeat); after how long
 * without one a lock is stale whoever holds it; and, on the same host, after
 * how long a lock whose pid is gone is stale (a few missed beats: a pid is
 * only a hint, as containers reuse them and may share a host name).
 */
const heartbeat = Duration.seconds(1)
const staleAfter = Duration.seconds(30)
const staleAfterDeadPid = Duration.seconds(4)
const warnEvery = Duration.seconds(10)

let hostName: string | undefined
const hostname = (): string => (hostName ??= os.hostname())

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
 * created with O_EXCL that names its holder (pid, host, a random token) and
 * whose mtime the holder touches every second (the heartbeat).
 *
 * A lock is stale, and taken over, when its heartbeat stopped for 30 s
 * (whatever it names: an empty or unreadable lock file, a pid reused by
 * another process, a holder on another host), or for 4 s when it names a pid
 * of this host that is gone. Waiting is logged at WARN with the holder and
 * how long, and bounded by `timeout` (`LockTimeout`). A lock file that could
 * be created but not written (a full disk) is still held, by its inode.
 * Released when the scope closes. Succeeds with whether it had to wait.
 *
 * @internal
 */
export const lock = (
  file: string,
  options: { readonly location: string; readonly timeout: Duration.Duration }
): Effect.Effect<
  { readonly waited: boolean },
  StorageError.WriteFailed | StorageError.LockTimeout,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const content: LockContent = {
      pid: process.pid,
      host: hostname(),
      token: crypto.randomUUID(),
      since: Date.now()
    }
    const text = JSON.stringify(content)
    const inodeOf = (target: string) =>
      Effect.sync(() => Option.fromNullable(nodeFsSync.statSync(target, { throwIfNoEntry: false })?.ino))

    // Ours when it holds our token, or (written empty on a full disk) our inode.
    const isOurs = (ino: Option.Option<number>) =>
      Effect.gen(function*() {
        const held = yield* readJson<LockContent>(file)
        if (Option.isSome(held)) return held.value.token === content.token
        const now = yield* inodeOf(file)
        return Option.isSome(now) && Option.isSome(ino) && now.value === ino.value
      })

    // One atomic attempt: the finalizer is registered if, and as soon as, the file was created.
    const tryCreate = Effect.uninterruptible(Effect.gen(function*() {
      const created = yield* call(() => nodeFsSync.openSync(file, "wx")).pipe(
        Effect.map(Option.some),
        Effect.catchIf((error) => error.code === "EEXIST", () => Effect.succeed(Option.none())),
        Effect.mapError(errors.writeFailed(file, "create the lock"))
      )
      if (Option.isNone(created)) return Option.none<Option.Option<number>>()
      const fd = created.value
      // A full disk may refuse even these bytes: the empty file is still the lock, known by its inode.
      const written = yield* Effect.option(call(() => nodeFsSync.writeFileSync(fd, text)))
      const ino = Option.isSome(written)
        ? Option.none<number>()
        : Option.fromNullable(Option.getOrUndefined(yield* Effect.option(call(() => nodeFsSync.fstatSync(fd))))?.ino)
      yield* Effect.ignore(call(() => nodeFsSync.closeSync(fd)))
      return Option.some(ino)
    }).pipe(
      Effect.tap((created) =>
        Option.isSome(created)
          ? Effect.addFinalizer(() =>
            // Only our own lock is removed (a holder presumed dead may have been replaced).
            Effect.flatMap(isOurs(created.value), (ours) => (ours ? removeAll(file) : Effect.void))
          )
          : Effect.void
      )
    ))

    // Who holds the lock, and whether it is stale.
    const judge = Effect.gen(function*() {
      const info = nodeFsSync.statSync(file, { throwIfNoEntry: false })
      if (info === undefined) {
        return Option.none<{ holder: string; stale: boolean; beat: number; ino: Option.Option<number> }>()
      }
      const age = Date.now() - info.mtimeMs
      const held = yield* readJson<LockContent>(file)
      const holder = Option.match(held, {
        onNone: () => "an unknown holder (the lock file is empty or unreadable)",
        onSome: (held) => `pid ${held.pid} on ${held.host}`
      })
      const deadHere = Option.isSome(held) && held.value.host === content.host && !processIsAlive(held.value.pid)
      const stale = age > Duration.toMillis(staleAfter) ||
        (deadHere && age > Duration.toMillis(staleAfterDeadPid))
      return Option.some({
        holder: `${holder}, last heartbeat ${(age / 1000).toFixed(1)} s ago`,
        stale,
        beat: info.mtimeMs,
        ino: Option.some(info.ino)
      })
    })

    // Takes a dead holder's lock out of the way: moved aside atomically, then
    // checked to be the one judged stale (else put back: it is a new holder's).
    const takeOver = (holder: string, ino: Option.Option<number>) =>
      Effect.gen(function*() {
        const aside = `${file}.${crypto.randomUUID()}.stale`
        const moved = yield* Effect.option(call(() => nodeFsSync.renameSync(file, aside)))
        if (Option.isNone(moved)) return
        const taken = yield* inodeOf(aside)
        if (Option.isNone(ino) || Option.isNone(taken) || taken.value !== ino.value) {
          yield* Effect.ignore(call(() => nodeFsSync.linkSync(aside, file)))
          yield* removeAll(aside)
          return
        }
        yield* removeAll(aside)
        yield* Effect.logWarning(`Took over the lock of ${errors.cap(options.location)} from ${holder}: it is stale`)
      })

    // How long this process waits is the Clock's (a TestClock drives it); a lock's age is the file
    // system's (mtimes are wall-clock time, written by other processes too).
    const startedAt = yield* Clock.currentTimeMillis
    let lastWarning = 0
    let waited = false
    // The holder is alive only if its heartbeat was seen to beat during the wait (a lock just
    // made and then orphaned looks fresh for a while: a pid or a recent time proves nothing).
    let firstSeen: { readonly ino: Option.Option<number>; readonly beat: number } | undefined
    let beatSeen = false
    let created = yield* tryCreate
    while (Option.isNone(created)) {
      const state = yield* judge
      if (Option.isSome(state) && state.value.stale) {
        yield* takeOver(state.value.holder, state.value.ino)
      } else {
        if (Option.isSome(state)) {
          const { beat, ino } = state.value
          if (firstSeen === undefined || !Option.getEquivalence((a: number, b: number) => a === b)(firstSeen.ino, ino)) {
            firstSeen = { ino, beat }
            beatSeen = false
          } else if (beat > firstSeen.beat) {
            beatSeen = true
          }
        }
        const holder = Option.match(state, { onNone: () => "a holder that just left", onSome: (s) => s.holder })
        const now = yield* Clock.currentTimeMillis
        const waitedFor = now - startedAt
        if (waitedFor >= Duration.toMillis(options.timeout)) {
          return yield* new StorageError.LockTimeout({
            location: options.location,
            lockFile: file,
            holder,
            seconds: Math.round(waitedFor / 1000),
            alive: beatSeen,
            staleAfterSeconds: Duration.toSeconds(staleAfter)
          })
        }
        if (!waited || now - lastWarning >= Duration.toMillis(warnEvery)) {
          yield* Effect.logWarning(
            `Waiting for the lock of ${errors.cap(options.location)} (${errors.cap(file)}), held by ${holder}, for ${
              (waitedFor / 1000).toFixed(0)
            } s (giving up after ${Duration.format(options.timeout)})`
          )
          lastWarning = now
        }
        waited = true
        yield* Effect.sleep(Duration.millis(yield* Random.nextIntBetween(40, 100)))
      }
      created = yield* tryCreate
    }
    const ino = created.value
    // The heartbeat tells every other process that the holder is alive; it stops touching a lock that is not ours.
    // (The file was just created: the first beat is one interval later.)
    yield* Effect.forkScoped(
      Effect.schedule(
        Effect.flatMap(isOurs(ino), (ours) =>
          ours
            ? Effect.ignore(Effect.tryPromise(() => nodeFs.utimes(file, new Date(), new Date())))
            : Effect.logWarning(`The lock of ${errors.cap(options.location)} was taken over while this process held it`)),
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
export const ensureDir = (dir: string): Effect.Effect<void, StorageError.WriteFailed> =>
  Effect.mapError(call(() => nodeFsSync.mkdirSync(dir, { recursive: true })), errors.writeFailed(dir, "create the folder"))
