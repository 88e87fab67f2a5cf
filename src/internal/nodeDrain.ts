import * as Effect from "effect/Effect"
import * as Duration from "effect/Duration"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as fs from "node:fs"
import { Readable, Transform } from "node:stream"
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
 * write stream that starts at `start`. The stall watchdog checks every 100
 * ms; progress is counted in the stream and published by a fiber every 100
 * ms (no effect is run from a Node callback), and once more at the end,
 * never waited for. Interruption destroys both streams and waits for the file
 * to be closed.
 *
 * @internal
 */
export const drain = (options: {
  readonly body: Readable
  readonly file: string
  readonly flags: "w" | "a" | "r+"
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
   * Told, every 100 ms and at the end, which bytes of the file the write
   * stream has written since it last told (file offsets): a hasher that
   * reads the file behind the writes.
   */
  readonly onWritten?: (start: number, length: number) => void
  /** With flags "a": the file's size before (where the writes begin). */
  readonly appendsAt?: number
}): Effect.Effect<number, transfer.Retryable | StorageError.WriteFailed> =>
  Effect.suspend(() => {
    // Bytes counted by the stream, not yet published.
    let unpublished = 0
    const publish = Effect.suspend(() => {
      const bytes = unpublished
      unpublished = 0
      return bytes > 0 ? options.progress.advance(bytes) : Effect.void
    })
    const copy = Effect.async<number, transfer.Retryable | StorageError.WriteFailed>((resume) => {
      const stallMillis = Duration.toMillis(options.stallTimeout)
      const highWaterMark = options.highWaterMark ?? 1024 * 1024
      let written = 0
      let lastBytesAt = Date.now()
      let writeError: NodeJS.ErrnoException | undefined
      const out = fs.createWriteStream(options.file, {
        flags: options.flags,
        highWaterMark,
        // fsync before close: bytes reported written are on the device (a resume, a rename, trust them).
        flush: true,
        ...(options.start === undefined ? {} : { start: options.start })
      })
      out.on("error", (error) => (writeError = error))
      const counter = new Transform({
        highWaterMark,
        transform(chunk: Buffer, _encoding, callback) {
          options.onBytes(chunk)
          written += chunk.byteLength
          unpublished += chunk.byteLength
          lastBytesAt = Date.now()
          callback(null, chunk)
        }
      })
      // Where the stream's writes began in the file ("a": at its end, given as `start`).
      const origin = options.appendsAt ?? options.start ?? 0
      let told = 0
      const tell = () => {
        if (options.onWritten === undefined || out.bytesWritten <= told) return
        options.onWritten(origin + told, out.bytesWritten - told)
        told = out.bytesWritten
      }
      const timer = setInterval(() => {
        tell()
        if (Date.now() - lastBytesAt > stallMillis) options.body.destroy(new Stalled())
      }, Math.min(100, stallMillis / 4))
      pipeline(options.body, counter, out).then(
        () => {
          clearInterval(timer)
          tell()
          resume(Effect.succeed(written))
        },
        (error: NodeJS.ErrnoException) => {
          clearInterval(timer)
          if (error instanceof Stalled) {
            const seconds = stallMillis / 1000
            resume(Effect.fail(new transfer.Retryable({ reason: `no bytes for ${seconds} s`, stalledSeconds: seconds })))
          } else if (writeError !== undefined) {
            resume(Effect.fail(
              new StorageError.WriteFailed({
                path: options.file,
                operation: "write",
                reason: writeError.code === "ENOSPC" || writeError.code === "EDQUOT"
                  ? "no space left on the device: free some, or point cache_dir elsewhere (the partial file " +
                    "stays in the cache, and the next run resumes it)"
                  : writeError.code === "EFBIG"
                  ? "the file is larger than this process may write (ulimit -f)"
                  : writeError.message,
                ...(writeError.code === undefined ? {} : { code: writeError.code }),
                cause: writeError
              })
            ))
          } else {
            resume(Effect.fail(
              new transfer.Retryable({ reason: `the body was cut off after ${written} bytes (${error.message})` })
            ))
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
    })
    // A transfer never waits for its observers: progress goes out from fibers of its own (the last
    // count too, so that a subscriber that blocks cannot hold a download or its interruption).
    // The publisher is interruptible whatever region the drain runs in, and its interruption is not
    // waited for: a subscriber stuck in its publish holds nothing.
    return Effect.flatMap(
      Effect.fork(Effect.interruptible(Effect.repeat(publish, Schedule.spaced(Duration.millis(100))))),
      (publisher) => Effect.ensuring(copy, Effect.zipRight(Fiber.interruptFork(publisher), Effect.forkDaemon(publish)))
    )
  })
