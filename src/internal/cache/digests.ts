/**
 * Digests of cached files: a file's identity on disk, its sha256 (whole or
 * by parts, in a worker as parts land), and the check of a cached copy.
 *
 * @internal
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as nodeFsSync from "node:fs"
import { Worker } from "node:worker_threads"
import * as StorageError from "../../StorageError.js"
import * as errors from "../errors.js"

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
    return info === undefined ? Option.none() : Option.some(identityOfStats(info))
  })

/**
 * The identity of a file from its stats (read with `bigint: true`).
 *
 * @internal
 */
export const identityOfStats = (info: nodeFsSync.BigIntStats): Identity =>
  `${info.size}:${info.mtimeNs}:${info.ino}:${info.ctimeNs}`

/**
 * The sha256 of a whole file, read in 1 MiB chunks on Node's own stream (an
 * archive's key, a watched file's content).
 *
 * @internal
 */
export const sha256OfFile = (file: string): Effect.Effect<string, StorageError.ReadFailed> =>
  Effect.async<string, StorageError.ReadFailed>((resume) => {
    const hash = crypto.createHash("sha256")
    const body = nodeFsSync.createReadStream(file, { highWaterMark: 1024 * 1024 })
    body.on("data", (chunk) => void hash.update(chunk))
    body.on("end", () => resume(Effect.succeed(hash.digest("hex"))))
    body.on("error", (error) =>
      resume(Effect.fail(new StorageError.ReadFailed({ path: file, operation: "read", reason: error.message }))))
    return Effect.sync(() => body.destroy())
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

/** Hashes the chunks it is sent, in order, and acknowledges each. */
const bytesHasherCode = `
const { parentPort, workerData } = require("node:worker_threads")
const crypto = require("node:crypto")
const hash = crypto.createHash(workerData.algorithm)
if (workerData.preamble !== undefined) hash.update(workerData.preamble)
parentPort.on("message", (message) => {
  if (message.end) return parentPort.postMessage({ digest: hash.digest("hex") })
  hash.update(message.chunk)
  parentPort.postMessage({ ack: true })
})
`

/** What one message to a bytes hasher carries. */
const hasherChunk = 4 * 1024 * 1024
/** Chunks sent and not yet hashed: the copies in flight are at most this many chunks. */
const hasherWindow = 4

/**
 * A hash of bytes that are in memory, computed in a worker thread: `add`
 * sends the next bytes (in order) as copies of at most 4 MiB, waiting while
 * four of them are not yet hashed, so that the copies in flight stay under
 * 16 MiB whatever the file's size; `digest` waits for the last. The worker
 * ends with the scope. The bytes themselves are never shared with the
 * worker: the buffer they come from stays the load's to release.
 *
 * @internal
 */
export const bytesHasher = (
  options: { readonly algorithm: string; readonly preamble?: string | undefined }
): Effect.Effect<
  {
    readonly add: (bytes: Uint8Array) => Effect.Effect<void>
    readonly digest: Effect.Effect<string>
  },
  never,
  Scope.Scope
> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => new Worker(bytesHasherCode, { eval: true, workerData: options })),
      (worker) => Effect.promise(() => worker.terminate())
    ),
    (worker) => {
      let inFlight = 0
      let wake: (() => void) | undefined
      let answer: ((digest: string) => void) | undefined
      let failure: Error | undefined
      worker.on("message", (message: { readonly ack?: boolean; readonly digest?: string }) => {
        if (message.ack === true) {
          inFlight--
          const resume = wake
          wake = undefined
          resume?.()
        } else if (message.digest !== undefined) answer?.(message.digest)
      })
      worker.on("error", (error) => {
        failure = error
        wake?.()
      })
      // Waits (with a canceler) until fewer than `limit` chunks are in flight.
      const room = (limit: number) =>
        Effect.async<void>((resume) => {
          const check = () => {
            if (failure !== undefined) return resume(Effect.die(failure))
            if (inFlight < limit) return resume(Effect.void)
            wake = check
          }
          check()
          return Effect.sync(() => void (wake = undefined))
        })
      const send = (bytes: Uint8Array) =>
        Effect.sync(() => {
          const chunk = bytes.slice()
          inFlight++
          worker.postMessage({ chunk }, [chunk.buffer])
        })
      return {
        add: (bytes) =>
          Effect.forEach(
            Array.from({ length: Math.ceil(bytes.byteLength / hasherChunk) }, (_, i) => i * hasherChunk),
            (at) => Effect.zipRight(room(hasherWindow), send(bytes.subarray(at, Math.min(bytes.byteLength, at + hasherChunk)))),
            { discard: true }
          ),
        digest: Effect.zipRight(
          room(1),
          Effect.async<string>((resume) => {
            if (failure !== undefined) return resume(Effect.die(failure))
            answer = (digest) => resume(Effect.succeed(digest))
            worker.postMessage({ end: true })
            return Effect.sync(() => void (answer = undefined))
          })
        )
      }
    }
  )

/** Keeps a running sha256 per part of one file, fed from the file in order; answers a part's digest so far. */
const partsDigesterCode = `
const { parentPort, workerData } = require("node:worker_threads")
const fs = require("node:fs")
const crypto = require("node:crypto")
const buffer = Buffer.allocUnsafe(1024 * 1024)
const parts = new Map()
let fd
parentPort.on("message", (message) => {
  try {
    if (fd === undefined) fd = fs.openSync(workerData.file, "r")
    let part = parts.get(message.part)
    if (part === undefined || message.from !== undefined) {
      part = { hash: crypto.createHash("sha256"), at: message.from }
      parts.set(message.part, part)
    }
    while (part.at < message.upto) {
      const read = fs.readSync(fd, buffer, 0, Math.min(buffer.length, message.upto - part.at), part.at)
      if (read === 0) throw new Error("the file ends at " + part.at + ", before " + message.upto)
      part.hash.update(buffer.subarray(0, read))
      part.at += read
    }
    parentPort.postMessage({ id: message.id, digest: part.hash.copy().digest("hex") })
  } catch (error) {
    parentPort.postMessage({ id: message.id, error: String(error && error.message || error) })
  }
})
`

/**
 * The sha256 of each part of a file written in parts, computed in a worker
 * thread from the file itself (the page cache) as the parts are written, so
 * that the event loop only receives and writes. `upto(part, from, offset)`
 * feeds the part from where it was last fed (from `from` the first time) up
 * to `offset`, and succeeds with the digest of [from, offset): a checkpoint's,
 * or the whole part's. The worker ends with the scope.
 *
 * @internal
 */
export const partsDigester = (
  file: string
): Effect.Effect<
  {
    readonly upto: (part: number, from: number, offset: number) => Effect.Effect<string, StorageError.ReadFailed>
    /** The same from a Node callback: `then` gets the digest (nothing on a failure: a checkpoint is then not recorded). */
    readonly uptoThen: (part: number, from: number, offset: number, then: (digest: string) => void) => void
    /** Succeeds once every digest asked for is answered (or the worker failed). */
    readonly idle: Effect.Effect<void>
  },
  never,
  Scope.Scope
> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => new Worker(partsDigesterCode, { eval: true, workerData: { file } })),
      (worker) => Effect.promise(() => worker.terminate())
    ),
    (worker) => {
      let nextId = 0
      const started = new Set<number>()
      const waiting = new Map<number, (answer: { readonly digest?: string; readonly error?: string }) => void>()
      const idlers = new Set<(done: Effect.Effect<void>) => void>()
      const whenIdle = () => {
        if (waiting.size > 0) return
        for (const resume of idlers) resume(Effect.void)
        idlers.clear()
      }
      worker.on("message", (answer: { readonly id: number; readonly digest?: string; readonly error?: string }) => {
        const resume = waiting.get(answer.id)
        waiting.delete(answer.id)
        resume?.(answer)
        whenIdle()
      })
      worker.on("error", (error) => {
        for (const resume of waiting.values()) resume({ error: error.message })
        waiting.clear()
        whenIdle()
      })
      const send = (
        part: number,
        from: number,
        offset: number,
        answer: (answer: { readonly digest?: string; readonly error?: string }) => void
      ) => {
        const id = nextId++
        waiting.set(id, answer)
        worker.postMessage({ id, part, upto: offset, ...(started.has(part) ? {} : { from }) })
        started.add(part)
        return id
      }
      return {
        upto: (part, from, offset) =>
          Effect.async<string, StorageError.ReadFailed>((resume) => {
            const id = send(part, from, offset, (answer) =>
              resume(
                answer.digest !== undefined
                  ? Effect.succeed(answer.digest)
                  : Effect.fail(new StorageError.ReadFailed({ path: file, operation: "hash", reason: answer.error ?? "unknown" }))
              ))
            // Interrupted: the answer is not waited for (the worker ends with the scope).
            return Effect.sync(() => void waiting.delete(id))
          }),
        uptoThen: (part, from, offset, then) =>
          void send(part, from, offset, (answer) => {
            if (answer.digest !== undefined) then(answer.digest)
          }),
        idle: Effect.async<void>((resume) => {
          if (waiting.size === 0) return resume(Effect.void)
          idlers.add(resume)
          return Effect.sync(() => void idlers.delete(resume))
        })
      }
    }
  )
