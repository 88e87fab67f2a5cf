import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { finished, Readable, Transform } from "node:stream"
import { pipeline } from "node:stream/promises"
import * as StorageError from "../StorageError.js"
import * as transfer from "./transfer.js"

/**
 * Whether a response body is a Node stream, for the fast path.
 *
 * @internal
 */
export const isNodeReadable = (u: unknown): u is Readable => u instanceof Readable

/**
 * The Node stream behind a response of @effect/platform-node's HTTP clients:
 * node:http's IncomingMessage, or undici's body.
 *
 * @internal
 */
export const readableOf = (response: unknown): Readable | undefined => {
  // @effect/platform wraps a response to abort its request when interrupted.
  const original = (response as { readonly original?: unknown }).original ?? response
  const source = (original as { readonly source?: { readonly body?: unknown } }).source
  if (isNodeReadable(source)) return source
  if (isNodeReadable(source?.body)) return source.body
  return undefined
}

class Stalled extends Error {}

/**
 * The Node fast path of `transfer.drain`: the body is piped (with Node's own
 * backpressure, no per-chunk scheduling) through a hashing step into a file
 * write stream that starts at `start`. Progress is counted in the stream
 * (no effect is run from a Node callback) and published by the load's
 * watcher, which is also the stall watchdog, on the Clock's time
 * (`FileTracker.watched`). Interruption destroys both streams and waits for
 * the file to be closed.
 *
 * @internal
 */
export const drain = (options: {
  readonly body: Readable
  readonly file: string
  readonly flags: "w" | "r+"
  readonly start?: number
  readonly onBytes: (chunk: Uint8Array) => void
  readonly progress: transfer.FileTracker
  readonly stallTimeout: Duration.Duration
  /**
   * Bytes each stage may hold (default 1 MiB). Parallel ranged GETs use less:
   * measured on 1 GiB from s3rver, 64 KiB per part gave a median peak of
   * 35–38 MiB (single rounds up to 66) where 1 MiB gave 51–81 MiB, at the
   * same speed.
   */
  readonly highWaterMark?: number
  /**
   * The bytes the body announced (undefined: unknown). A small body into a
   * new file (at most `smallBody`, no checkpoints) is gathered in memory and
   * written with one flushed `writev` once it is whole: no streams, for the
   * thousands of small files of a large model folder.
   */
  readonly size?: number | undefined
  /**
   * Checkpoints that survive SIGKILL: every `every` bytes the body passed,
   * `mark` is asked for a token of that moment (a digest of the bytes so
   * far); once those bytes are written, the file is flushed (fdatasync) and
   * `durable` told (from a Node callback: it must only record). A killed
   * process then leaves a record of bytes that are on the device. A body cut
   * off (or stalled) is told once more, with every byte it delivered, once
   * the file is flushed and closed. A flush may be told after a later one.
   */
  readonly checkpoint?: {
    readonly every: number
    readonly mark: () => string
    readonly durable: (bytes: number, mark: string) => void
  } | undefined
}): Effect.Effect<number, transfer.Retryable | StorageError.WriteFailed> =>
  options.size !== undefined && options.size <= smallBody && options.flags === "w" && (options.start ?? 0) === 0 &&
    options.checkpoint === undefined
    ? drainSmall({ ...options, size: options.size })
    : options.progress.watched(options.stallTimeout, (count, onStall) =>
    Effect.async<number, transfer.Retryable | StorageError.WriteFailed>((resume) => {
      const stallMillis = Duration.toMillis(options.stallTimeout)
      const highWaterMark = options.highWaterMark ?? 1024 * 1024
      let written = 0
      let writeError: NodeJS.ErrnoException | undefined
      const out = fs.createWriteStream(options.file, {
        flags: options.flags,
        highWaterMark,
        // fsync before close: bytes reported written are on the device (a resume, a rename, trust them).
        flush: true,
        ...(options.start === undefined ? {} : { start: options.start })
      })
      out.on("error", (error) => (writeError = error))
      // Marks taken as the bytes pass, each flushed and told once the write stream wrote that far.
      const checkpoint = options.checkpoint
      const marks: Array<{ readonly bytes: number; readonly mark: string }> = []
      let nextMark = checkpoint?.every ?? Number.POSITIVE_INFINITY
      let flushing = false
      const flushMarks = () => {
        const fd = (out as unknown as { readonly fd: number | null }).fd
        if (checkpoint === undefined || flushing || marks.length === 0 || typeof fd !== "number" || out.closed) return
        let ready: { readonly bytes: number; readonly mark: string } | undefined
        while (marks.length > 0 && marks[0]!.bytes <= out.bytesWritten) ready = marks.shift()
        if (ready === undefined) return
        const reached = ready
        flushing = true
        fs.fdatasync(fd, (error) => {
          flushing = false
          if (error === null) checkpoint.durable(reached.bytes, reached.mark)
        })
      }
      const counter = new Transform({
        highWaterMark,
        transform(chunk: Buffer, _encoding, callback) {
          options.onBytes(chunk)
          written += chunk.byteLength
          count(chunk.byteLength)
          if (written >= nextMark) {
            marks.push({ bytes: written, mark: checkpoint!.mark() })
            nextMark = written + checkpoint!.every
          }
          callback(null, chunk)
        }
      })
      onStall(() => options.body.destroy(new Stalled()))
      const timer = setInterval(flushMarks, 100)
      // A body that ends early (cut off, stalled) still has its bytes so far written: the hashing
      // step is ended rather than destroyed, so that the file holds every byte received (a resume
      // goes on from there), and the failure is told once they are written.
      let bodyError: Error | undefined
      options.body.pipe(counter)
      finished(options.body, (error) => {
        if (error === undefined || error === null) return
        bodyError = error
        options.body.unpipe(counter)
        counter.end()
      })
      pipeline(counter, out).then(
        () => {
          clearInterval(timer)
          if (bodyError === undefined) return resume(Effect.succeed(written))
          // The write stream flushed the file as it closed: every byte the body delivered is on the
          // device, a checkpoint the retry goes on from.
          if (checkpoint !== undefined && written > 0) checkpoint.durable(written, checkpoint.mark())
          resume(Effect.fail(bodyError instanceof Stalled ? stalled(stallMillis) : cutOff(written, bodyError)))
        },
        (error: NodeJS.ErrnoException) => {
          clearInterval(timer)
          // The file could not be written (or the copy was destroyed): the body is of no use any more.
          options.body.destroy()
          if (error instanceof Stalled) {
            resume(Effect.fail(stalled(stallMillis)))
          } else if (writeError !== undefined) {
            resume(Effect.fail(writeFailed(options.file, writeError)))
          } else {
            resume(Effect.fail(cutOff(written, error)))
          }
        }
      )
      // Interrupted: both streams are destroyed, and the file is closed before anything removes it.
      return Effect.async<void>((done) => {
        clearInterval(timer)
        options.body.destroy()
        if (out.closed) return done(Effect.void)
        out.once("close", () => done(Effect.void))
        out.destroy()
      })
    }))

const writeFailed = (file: string, error: NodeJS.ErrnoException) =>
  new StorageError.WriteFailed({
    path: file,
    operation: "write",
    reason: error.code === "ENOSPC" || error.code === "EDQUOT"
      ? "no space left on the device: free some, or point cache_dir elsewhere (the partial file " +
        "stays in the cache, and the next run resumes it)"
      : error.code === "EFBIG"
      ? "the file is larger than this process may write (ulimit -f)"
      : error.message,
    ...(error.code === undefined ? {} : { code: error.code }),
    cause: error
  })

/** The largest body `drain` gathers in memory before one write (see `size`). */
export const smallBody = 1024 * 1024

/**
 * A small body into a new file: gathered as it arrives (hashed, counted),
 * then written with one `writev` and flushed (fsync) once it ended.
 * Cut off or stalled, nothing is written (a small file is fetched again
 * whole). A body longer than announced is cut there and fails. Interrupted:
 * the body is destroyed, and a write under way is waited for, so that
 * nothing writes the file once the effect has ended.
 */
const drainSmall = (options: {
  readonly body: Readable
  readonly file: string
  readonly size: number
  readonly onBytes: (chunk: Uint8Array) => void
  readonly progress: transfer.FileTracker
  readonly stallTimeout: Duration.Duration
}): Effect.Effect<number, transfer.Retryable | StorageError.WriteFailed> =>
  options.progress.watched(options.stallTimeout, (count, onStall) =>
    Effect.async<number, transfer.Retryable | StorageError.WriteFailed>((resume) => {
      const stallMillis = Duration.toMillis(options.stallTimeout)
      const body = options.body
      const chunks: Array<Buffer> = []
      let received = 0
      let ended = false
      // A write under way (and who waits for it, when interrupted).
      let writing = false
      let written: (() => void) | undefined
      const finish = (result: Effect.Effect<number, transfer.Retryable | StorageError.WriteFailed>) => {
        if (ended) return
        ended = true
        body.off("data", onData)
        body.off("end", onEnd)
        body.off("error", onError)
        body.off("close", onClose)
        resume(result)
      }
      const onData = (chunk: Buffer) => {
        if (ended) return
        if (received + chunk.byteLength > options.size) {
          body.destroy()
          return finish(Effect.fail(new transfer.Retryable({ reason: `the body had more than the ${options.size} bytes announced` })))
        }
        chunks.push(chunk)
        options.onBytes(chunk)
        received += chunk.byteLength
        count(chunk.byteLength)
      }
      // Opened and closed synchronously (microseconds); the bytes and their flush go through the
      // thread pool: two round trips.
      const onEnd = () => {
        if (ended) return
        writing = true
        const done = (error: NodeJS.ErrnoException | null, fd?: number) => {
          if (fd !== undefined) {
            try {
              fs.closeSync(fd)
            } catch (closing) {
              error ??= closing as NodeJS.ErrnoException
            }
          }
          writing = false
          written?.()
          finish(error === null ? Effect.succeed(received) : Effect.fail(writeFailed(options.file, error)))
        }
        let fd: number
        try {
          fd = fs.openSync(options.file, "w")
        } catch (error) {
          return done(error as NodeJS.ErrnoException)
        }
        fs.writev(fd, chunks, 0, (error, bytes) => {
          if (error !== null) return done(error, fd)
          if (bytes !== received) return done(Object.assign(new Error(`wrote ${bytes} of ${received} bytes`), { code: "EIO" }), fd)
          fs.fsync(fd, (flushing) => done(flushing, fd))
        })
      }
      const onError = (error: Error) => finish(Effect.fail(error instanceof Stalled ? stalled(stallMillis) : cutOff(received, error)))
      // Closed without an end or an error (a socket torn down): cut off.
      const onClose = () => {
        if (!writing) finish(Effect.fail(cutOff(received, new Error("the connection was closed"))))
      }
      onStall(() => body.destroy(new Stalled()))
      body.on("data", onData)
      body.once("end", onEnd)
      body.once("error", onError)
      body.once("close", onClose)
      return Effect.async<void>((done) => {
        ended = true
        body.off("data", onData)
        body.destroy()
        if (!writing) return done(Effect.void)
        written = () => done(Effect.void)
      })
    }))

const stalled = (stallMillis: number) => {
  const seconds = stallMillis / 1000
  return new transfer.Retryable({ reason: `no bytes for ${seconds} s`, stalledSeconds: seconds })
}

const cutOff = (written: number, error: Error) =>
  new transfer.Retryable({ reason: `the body was cut off after ${written} bytes (${error.message})` })

/**
 * The memory sink's Node path: the body is copied, as it arrives, straight
 * into `into` (a region of the file's buffer: no other copy is made, nothing
 * is buffered). A body longer than the region is cut there and fails; a
 * shorter one succeeds with what it had (the caller asks for the rest). The
 * stall watchdog and progress work as `drain`'s. Interruption destroys the
 * body: no byte is copied once the effect has ended, so the buffer can be
 * released at once.
 *
 * @internal
 */
export const drainInto = (options: {
  readonly body: Readable
  readonly into: Uint8Array
  readonly onBytes: (chunk: Uint8Array) => void
  readonly progress: transfer.FileTracker
  readonly stallTimeout: Duration.Duration
}): Effect.Effect<number, transfer.Retryable> =>
  options.progress.watched(options.stallTimeout, (count, onStall) =>
    Effect.async<number, transfer.Retryable>((resume) => {
      const stallMillis = Duration.toMillis(options.stallTimeout)
      const into = options.into
      let written = 0
      let ended = false
      const body = options.body
      const finish = (result: Effect.Effect<number, transfer.Retryable>) => {
        if (ended) return
        ended = true
        body.off("data", onData)
        body.off("end", onEnd)
        body.off("error", onError)
        body.off("close", onClose)
        resume(result)
      }
      const onData = (chunk: Buffer) => {
        if (ended) return
        if (written + chunk.byteLength > into.byteLength) {
          body.destroy()
          return finish(Effect.fail(new transfer.Retryable({ reason: `the body had more than the ${into.byteLength} bytes asked for` })))
        }
        into.set(chunk, written)
        options.onBytes(chunk)
        written += chunk.byteLength
        count(chunk.byteLength)
      }
      const onEnd = () => finish(Effect.succeed(written))
      const onError = (error: Error) => finish(Effect.fail(error instanceof Stalled ? stalled(stallMillis) : cutOff(written, error)))
      // Closed without an end or an error (a socket torn down): cut off.
      const onClose = () => finish(Effect.fail(cutOff(written, new Error("the connection was closed"))))
      onStall(() => body.destroy(new Stalled()))
      body.on("data", onData)
      body.once("end", onEnd)
      body.once("error", onError)
      body.once("close", onClose)
      // Interrupted: the body is destroyed; no listener copies any more.
      return Effect.sync(() => {
        ended = true
        body.off("data", onData)
        body.destroy()
      })
    }))
