import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs"
import { finished, Readable } from "node:stream"
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
 * The Node fast path of `transfer.drain`: the body's chunks are hashed and
 * counted as they arrive and gathered into batches, each written with one
 * `writev` at its place in the file (one round trip through the thread pool
 * per batch, not per 64 KiB chunk); at most two batches are held (one being
 * written, one gathering): the body is paused beyond that (Node's
 * backpressure). Progress is counted as the chunks arrive (no effect is run
 * from a Node callback) and published by the load's watcher, which is also
 * the stall watchdog, on the Clock's time (`FileTracker.watched`). The file
 * is flushed (fsync) before it is closed. Interruption destroys the body and
 * waits for the file to be closed.
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
   * The bytes gathered before one write (default 1 MiB); a transfer holds at
   * most twice that. Parallel ranged GETs use less each (256 KiB).
   */
  readonly batch?: number
  /**
   * The bytes the body announced (undefined: unknown). A small body into a
   * new file (at most `smallBody`, no checkpoints) is gathered in memory and
   * written with one flushed `writev` once it is whole: for the thousands of
   * small files of a large model folder.
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
        const batch = options.batch ?? 1024 * 1024
        const body = options.body
        const start = options.start ?? 0
        const checkpoint = options.checkpoint
        let fd: number
        try {
          fd = fs.openSync(options.file, options.flags)
        } catch (error) {
          return resume(Effect.fail(writeFailed(options.file, error as NodeJS.ErrnoException)))
        }
        // Bytes that arrived, and those in the file (written by the thread pool).
        let received = 0
        let written = 0
        let gathered: Array<Buffer> = []
        let gatheredBytes = 0
        let writing = false
        let writeError: NodeJS.ErrnoException | undefined
        // Why the body ended (undefined: it has not; null: its end).
        let bodyEnd: Error | null | undefined
        let settled = false
        // The file's closing: under way (who waits for its end), then done.
        let closing: Array<() => void> | undefined
        let closed = false
        let onClosed: (() => void) | undefined
        // Marks taken as the bytes pass, each flushed and told once the file holds that far.
        const marks: Array<{ readonly bytes: number; readonly mark: string }> = []
        let nextMark = checkpoint?.every ?? Number.POSITIVE_INFINITY
        let flushing = false
        const flushMarks = () => {
          if (checkpoint === undefined || flushing || closed || marks.length === 0) return
          let ready: { readonly bytes: number; readonly mark: string } | undefined
          while (marks.length > 0 && marks[0]!.bytes <= written) ready = marks.shift()
          if (ready === undefined) return
          const reached = ready
          flushing = true
          fs.fdatasync(fd, (error) => {
            flushing = false
            if (error === null && !closed) checkpoint.durable(reached.bytes, reached.mark)
            if (closed) onClosed?.()
          })
        }
        // Closes the file (flushed first when asked), once; no write may be under way.
        const close = (flush: boolean, then: (error: NodeJS.ErrnoException | null) => void) => {
          const waiters: Array<() => void> = []
          closing = waiters
          const closeNow = (error: NodeJS.ErrnoException | null) => {
            closed = true
            const finish = () => {
              try {
                fs.closeSync(fd)
              } catch (failure) {
                error ??= failure as NodeJS.ErrnoException
              }
              then(error)
              for (const waiter of waiters) waiter()
            }
            // A checkpoint's flush under way is let finish first (its descriptor must stay open).
            if (flushing) onClosed = finish
            else finish()
          }
          if (flush) fs.fsync(fd, closeNow)
          else closeNow(null)
        }
        const settle = (result: Effect.Effect<number, transfer.Retryable | StorageError.WriteFailed>) => {
          if (settled) return
          settled = true
          resume(result)
        }
        // What is gathered goes to the file; once the body ended and all is written, the file is closed.
        const pump = () => {
          if (writing || settled || closing !== undefined) return
          if (writeError !== undefined) {
            body.destroy()
            return close(false, () => settle(Effect.fail(writeFailed(options.file, writeError!))))
          }
          if (gatheredBytes > 0 && (gatheredBytes >= batch || bodyEnd !== undefined)) {
            const chunks = gathered
            gathered = []
            gatheredBytes = 0
            writing = true
            writeAll(fd, chunks, start + written, (error, count) => {
              writing = false
              written += count
              if (error !== null) writeError = error
              flushMarks()
              if (body.isPaused() && bodyEnd === undefined && writeError === undefined) body.resume()
              pump()
            })
            return
          }
          if (bodyEnd === undefined) return
          // Every byte received is in the file: flushed, closed, and the outcome told. A body that ended
          // early (cut off, stalled) still has every byte it delivered on the device: a checkpoint.
          const failure = bodyEnd
          close(true, (error) => {
            if (error !== null) return settle(Effect.fail(writeFailed(options.file, error)))
            if (failure === null) return settle(Effect.succeed(written))
            if (checkpoint !== undefined && written > 0) checkpoint.durable(written, checkpoint.mark())
            settle(Effect.fail(failure instanceof Stalled ? stalled(stallMillis) : cutOff(written, failure)))
          })
        }
        const onData = (chunk: Buffer) => {
          options.onBytes(chunk)
          received += chunk.byteLength
          count(chunk.byteLength)
          if (received >= nextMark) {
            marks.push({ bytes: received, mark: checkpoint!.mark() })
            nextMark = received + checkpoint!.every
          }
          gathered.push(chunk)
          gatheredBytes += chunk.byteLength
          // Two batches at most: one being written, one gathered.
          if (writing && gatheredBytes >= batch) body.pause()
          pump()
        }
        const onEnd = (error: Error | null) => {
          if (bodyEnd !== undefined) return
          bodyEnd = error
          body.off("data", onData)
          pump()
        }
        onStall(() => body.destroy(new Stalled()))
        body.on("data", onData)
        finished(body, (error) => onEnd(error ?? null))
        // Interrupted: the body is destroyed, and the file closed (once a write under way is done)
        // before anything removes it.
        return Effect.async<void>((done) => {
          settled = true
          body.off("data", onData)
          body.destroy()
          const closeWhenIdle = (): void => {
            if (closing !== undefined) return void closing.push(() => done(Effect.void))
            if (writing) return void setImmediate(closeWhenIdle)
            close(false, () => done(Effect.void))
          }
          closeWhenIdle()
        })
      }))

/**
 * Writes every byte of `chunks` at `position` with `writev`, again from where
 * a short write stopped (a disk that fills up writes what fits; the next
 * write tells ENOSPC). Tells the bytes written and the error, if any.
 */
const writeAll = (
  fd: number,
  chunks: ReadonlyArray<Buffer>,
  position: number,
  then: (error: NodeJS.ErrnoException | null, written: number) => void
) => {
  let done = 0
  const next = (rest: ReadonlyArray<Buffer>) =>
    fs.writev(fd, rest, position + done, (error, count) => {
      if (error !== null) return then(error, done)
      done += count
      if (count === 0) return then(Object.assign(new Error("the file system wrote nothing"), { code: "EIO" }), done)
      let skip = count
      const left: Array<Buffer> = []
      for (const chunk of rest) {
        if (skip >= chunk.byteLength) skip -= chunk.byteLength
        else {
          left.push(skip > 0 ? chunk.subarray(skip) : chunk)
          skip = 0
        }
      }
      if (left.length === 0) then(null, done)
      else next(left)
    })
  next(chunks)
}

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
      onStall(() => options.body.destroy(new Stalled()))
      const chunks: Array<Buffer> = []
      // A write under way (and who waits for it, when interrupted).
      let writing = false
      let written: (() => void) | undefined
      const stop = consume(options.body, {
        limit: options.size,
        tooLong: `the body had more than the ${options.size} bytes announced`,
        stallMillis: Duration.toMillis(options.stallTimeout),
        onBytes: options.onBytes,
        count,
        take: (chunk) => void chunks.push(chunk)
      }, (outcome) => {
        if (Either.isLeft(outcome)) return resume(Effect.fail(outcome.left))
        const received = outcome.right
        // Opened and closed synchronously (microseconds); the bytes and their flush go through the
        // thread pool: two round trips.
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
          resume(error === null ? Effect.succeed(received) : Effect.fail(writeFailed(options.file, error)))
        }
        let fd: number
        try {
          fd = fs.openSync(options.file, "w")
        } catch (error) {
          return done(error as NodeJS.ErrnoException)
        }
        writeAll(fd, chunks, 0, (error) => {
          if (error !== null) return done(error, fd)
          fs.fsync(fd, (flushing) => done(flushing, fd))
        })
      })
      return Effect.async<void>((done) => {
        stop()
        if (!writing) return done(Effect.void)
        written = () => done(Effect.void)
      })
    }))

/**
 * Reads a body to its end, at most `limit` bytes: each chunk is handed to
 * `take` (with the bytes before it), then hashed and counted. Tells the bytes
 * read, or why the body ended otherwise (cut off, closed, stalled, longer than
 * `limit`: `tooLong`), once. The function it returns stops reading (no chunk
 * is taken once it was called) and destroys the body.
 */
const consume = (
  body: Readable,
  options: {
    readonly limit: number
    readonly tooLong: string
    readonly stallMillis: number
    readonly onBytes: (chunk: Uint8Array) => void
    readonly count: (bytes: number) => void
    readonly take: (chunk: Buffer, at: number) => void
  },
  done: (outcome: Either.Either<number, transfer.Retryable>) => void
): (() => void) => {
  let received = 0
  let ended = false
  const finish = (outcome: Either.Either<number, transfer.Retryable>) => {
    if (ended) return
    ended = true
    body.off("data", onData)
    body.off("end", onEnd)
    body.off("error", onError)
    body.off("close", onClose)
    done(outcome)
  }
  const onData = (chunk: Buffer) => {
    if (ended) return
    if (received + chunk.byteLength > options.limit) {
      body.destroy()
      return finish(Either.left(new transfer.Retryable({ reason: options.tooLong })))
    }
    options.take(chunk, received)
    options.onBytes(chunk)
    received += chunk.byteLength
    options.count(chunk.byteLength)
  }
  const onEnd = () => finish(Either.right(received))
  const onError = (error: Error) =>
    finish(Either.left(error instanceof Stalled ? stalled(options.stallMillis) : cutOff(received, error)))
  // Closed without an end or an error (a socket torn down): cut off.
  const onClose = () => finish(Either.left(cutOff(received, new Error("the connection was closed"))))
  body.on("data", onData)
  body.once("end", onEnd)
  body.once("error", onError)
  body.once("close", onClose)
  return () => {
    ended = true
    body.off("data", onData)
    body.destroy()
  }
}

const stalled = (stallMillis: number) => transfer.stalled(stallMillis / 1000)

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
      onStall(() => options.body.destroy(new Stalled()))
      const into = options.into
      const stop = consume(options.body, {
        limit: into.byteLength,
        tooLong: `the body had more than the ${into.byteLength} bytes asked for`,
        stallMillis: Duration.toMillis(options.stallTimeout),
        onBytes: options.onBytes,
        count,
        take: (chunk, at) => into.set(chunk, at)
      }, (outcome) => resume(Either.match(outcome, { onLeft: Effect.fail, onRight: Effect.succeed })))
      // Interrupted: the body is destroyed; no chunk is copied any more.
      return Effect.sync(stop)
    }))
