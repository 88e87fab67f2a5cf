import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Progress from "../Progress.js"
import * as StorageError from "../StorageError.js"
import { cap } from "./text.js"

/**
 * A failure that another attempt may fix. Never leaves the library: after the
 * last retry it becomes `TransientFailure` or `StallTimeout`.
 *
 * @internal
 */
export class Retryable extends Data.TaggedError("Retryable")<{
  readonly reason: string
  readonly status?: number | undefined
  /** What the server asked for (Retry-After), in milliseconds. */
  readonly retryAfter?: number | undefined
  /**
   * What the server asked for as a moment (Retry-After: an HTTP date), in
   * milliseconds since the epoch: a wait from the Clock's time when the
   * attempt fails.
   */
  readonly retryAt?: number | undefined
  readonly stalledSeconds?: number | undefined
}> {}

/**
 * The retry policy when none is given: exponential from 250 ms, jittered,
 * at most `retries` retries.
 *
 * @internal
 */
export const defaultSchedule = (retries: number): Schedule.Schedule<unknown, Retryable> =>
  Schedule.exponential(Duration.millis(250), 2).pipe(
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(retries))
  )

/**
 * Runs `attempt` under `schedule`, retrying `Retryable` failures only, waiting
 * at least what a server asked for (Retry-After, up to `maxRetryAfter`), and
 * logging each retry. The final failure names the number of attempts.
 *
 * @internal
 */
export const retrying = <A, E>(options: {
  readonly location: string
  readonly schedule: Schedule.Schedule<unknown, Retryable>
  readonly maxRetryAfter: Duration.Duration
  readonly attempt: Effect.Effect<A, E | Retryable>
}): Effect.Effect<A, Exclude<E, Retryable> | StorageError.TransientFailure | StorageError.StallTimeout> =>
  Effect.suspend(() => {
    let attempts = 0
    // Built when a first attempt failed (most succeed: thousands of small files).
    const scheduleOf = () => Schedule.intersect(options.schedule, Schedule.identity<Retryable>()).pipe(
      Schedule.modifyDelay(([, failure], delay) =>
        failure.retryAfter === undefined ? delay : Duration.max(delay, Duration.millis(failure.retryAfter))
      ),
      Schedule.whileInput((failure: Retryable) =>
        failure.retryAfter === undefined || failure.retryAfter <= Duration.toMillis(options.maxRetryAfter)
      ),
      // Only an attempt that will be followed by another is logged as retried;
      // the last one's failure is the error the caller gets.
      Schedule.onDecision(([, failure], decision) =>
        decision._tag === "Continue"
          ? Effect.flatMap(Clock.currentTimeMillis, (now) => {
            // The schedule's intervals are on the Clock's time (a TestClock's, in tests).
            const wait = Math.max(0, ScheduleIntervals.start(decision.intervals) - now)
            return Effect.logWarning(
              `Attempt ${attempts} for ${cap(options.location)} failed (${cap(failure.reason)}); retrying in ${
                (wait / 1000).toFixed(1)
              } s`
            )
          })
          : Effect.void
      )
    )
    const isRetryable = (error: unknown): error is Retryable => error instanceof Retryable
    const giveUp = (failure: Retryable, attempts: number): StorageError.TransientFailure | StorageError.StallTimeout =>
      failure.stalledSeconds !== undefined
        ? new StorageError.StallTimeout({ location: options.location, seconds: failure.stalledSeconds, attempts })
        : new StorageError.TransientFailure({
          location: options.location,
          attempts,
          reason: failure.retryAfter !== undefined && failure.retryAfter > Duration.toMillis(options.maxRetryAfter)
            ? `${failure.reason}; the server asks to retry after ${Math.ceil(failure.retryAfter / 1000)} s, ` +
              `more than the ${Duration.format(options.maxRetryAfter)} allowed`
            : failure.reason,
          ...(failure.status === undefined ? {} : { status: failure.status })
        })
    // Failures that are not retryable leave the retried effect as values, untouched by the schedule.
    const once: Effect.Effect<Either.Either<A, E>, Retryable> = Effect.suspend(() => {
      attempts++
      return options.attempt
    }).pipe(
      Effect.map(Either.right),
      Effect.catchAll((error) =>
        !isRetryable(error)
          ? Effect.succeed(Either.left(error as Exclude<E, Retryable>))
          : error.retryAt === undefined
          ? Effect.fail(error)
          : Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.fail(
              new Retryable({
                reason: error.reason,
                status: error.status,
                stalledSeconds: error.stalledSeconds,
                retryAfter: Math.max(0, error.retryAt! - now)
              })
            ))
      )
    )
    // The first attempt runs on its own; its failure is the schedule's first input (replayed, not run again).
    const retried = (first: Retryable) => {
      let replay: Retryable | undefined = first
      return Effect.retry(
        Effect.suspend(() => {
          const failure = replay
          replay = undefined
          return failure === undefined ? once : Effect.fail(failure)
        }),
        scheduleOf()
      ).pipe(Effect.catchAll((failure) => Effect.fail(giveUp(failure, attempts))))
    }
    return Effect.flatMap(
      Effect.catchAll(once, retried),
      Either.match({
        onLeft: (error) => Effect.fail(error as Exclude<E, Retryable>),
        onRight: Effect.succeed
      })
    )
  })

/**
 * Retry-After: seconds (a wait, in milliseconds), or an HTTP date (a moment,
 * which `retrying` turns into a wait from the Clock's time).
 *
 * @internal
 */
export const retryAfterOf = (
  value: string | undefined
): { readonly retryAfter?: number; readonly retryAt?: number } => {
  if (value === undefined) return {}
  if (/^\d+$/.test(value.trim())) return { retryAfter: Number(value.trim()) * 1000 }
  const date = Date.parse(value)
  return Number.isNaN(date) ? {} : { retryAt: date }
}

const MiB = 1024 * 1024
const publishEvery = 100
const logEvery = 5000

/**
 * Progress of one load: publishes events (throttled per file) to the
 * `Progress` service and logs at a modest rate.
 *
 * @internal
 */
export interface Tracker {
  readonly file: (location: string, name: string) => FileTracker
}

/** @internal */
export interface FileTracker {
  readonly start: (total: number | undefined, done: number) => Effect.Effect<void>
  readonly cached: (size: number) => Effect.Effect<void>
  /** The file waits for memory (its share of the `MemoryBudget`) before any byte is fetched. */
  readonly waiting: (total: number) => Effect.Effect<void>
  readonly finish: (size: number) => Effect.Effect<void>
  /**
   * Runs a copy that counts its bytes with `count` (synchronous bookkeeping,
   * callable from a Node callback: no effect is run there) while the load's
   * one watcher publishes them, at most every 100 ms, and watches for a
   * stall: when no byte came for `stallTimeout` of the Clock's time (a
   * TestClock's, in tests), the copy is told through the `stalled` it
   * registered.
   */
  readonly watched: <A, E>(
    stallTimeout: Duration.Duration,
    copy: (count: (bytes: number) => void, onStall: (stalled: () => void) => void) => Effect.Effect<A, E>
  ) => Effect.Effect<A, E>
}

/** A copy under the load's watcher. */
interface Watch {
  readonly stallMillis: number
  /** Bytes counted since the last tick. */
  fresh: number
  lastBytesAt: number
  stalled: (() => void) | undefined
  readonly publish: Effect.Effect<void>
}

/**
 * A load's progress. Its copies under way share one watcher, a fiber of the
 * load's scope that runs only while copies are under way (thousands of small
 * files must not cost a fiber each).
 *
 * @internal
 */
export const makeTracker: Effect.Effect<Tracker, never, Scope.Scope> = Effect.gen(function*() {
  const progress = yield* Progress.Progress
  const scope = yield* Effect.scope
  // Running sums over the files (a load of thousands of files must not add them up on every event).
  let sumDone = 0
  let sumTotal = 0
  // Time is the Clock's (a TestClock's in tests): throttling, rates and durations.
  const startedAt = yield* Clock.currentTimeMillis
  let lastLog = startedAt
  const overall = () => ({ done: sumDone, total: sumTotal })
  // The copies under way, and their watcher: each tick publishes the files that moved and
  // tells a copy that got no byte for its stall timeout; it ends once no copy is left.
  const watches = new Set<Watch>()
  let watching = false
  const watch: Effect.Effect<void> = Effect.suspend(() => {
    if (watches.size === 0) {
      watching = false
      return Effect.void
    }
    let every = publishEvery
    for (const copy of watches) every = Math.min(every, copy.stallMillis / 4)
    return Effect.sleep(Duration.millis(every)).pipe(
      Effect.zipRight(Clock.currentTimeMillis),
      Effect.flatMap((now) => {
        const moved: Array<Effect.Effect<void>> = []
        for (const copy of watches) {
          if (copy.fresh > 0) {
            copy.fresh = 0
            copy.lastBytesAt = now
            moved.push(copy.publish)
          } else if (now - copy.lastBytesAt > copy.stallMillis && copy.stalled !== undefined) {
            const stalled = copy.stalled
            copy.stalled = undefined
            stalled()
          }
        }
        return moved.length === 0 ? Effect.void : Effect.zipRight(Effect.all(moved, { discard: true }), maybeLog)
      }),
      Effect.zipRight(watch)
    )
  })
  const maybeLog = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    if (now - lastLog < logEvery) return Effect.void
    lastLog = now
    const { done, total } = overall()
    const rate = done / MiB / Math.max(0.001, (now - startedAt) / 1000)
    return Effect.logDebug(
      `Fetching: ${(done / MiB).toFixed(1)} of ${(total / MiB).toFixed(1)} MiB (${rate.toFixed(1)} MiB/s)`
    )
  })
  return {
    file: (location, name) => {
      const state = { done: 0, total: undefined as number | undefined }
      // A file counts its total, or what it has so far when the total is unknown.
      const set = (total: number | undefined, done: number) => {
        sumDone += done - state.done
        sumTotal += (total ?? done) - (state.total ?? state.done)
        state.total = total
        state.done = done
      }
      const publish = (phase: Progress.Event["phase"]) =>
        Effect.suspend(() => {
          const { done, total } = overall()
          return progress.publish({
            location,
            name,
            done: state.done,
            total: state.total,
            overallDone: done,
            overallTotal: total,
            phase
          })
        })
      return {
        start: (total, done) =>
          Effect.suspend(() => {
            set(total, done)
            // Then the load's watcher publishes the bytes as they come, at most every 100 ms.
            return publish("fetching")
          }),
        cached: (size) =>
          Effect.suspend(() => {
            set(size, size)
            return publish("cached")
          }),
        waiting: (total) =>
          Effect.suspend(() => {
            set(total, 0)
            return Effect.zipRight(
              publish("waiting"),
              Effect.logDebug(`${cap(location)} waits for ${(total / MiB).toFixed(1)} MiB of the memory budget`)
            )
          }),
        finish: (size) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            set(size, size)
            const seconds = (now - startedAt) / 1000
            return Effect.zipRight(
              publish("done"),
              Effect.logDebug(`Fetched ${cap(location)} (${(size / MiB).toFixed(1)} MiB) in ${seconds.toFixed(1)} s`)
            )
          }),
        watched: (stallTimeout, copy) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const entry: Watch = {
              stallMillis: Duration.toMillis(stallTimeout),
              fresh: 0,
              lastBytesAt: now,
              stalled: undefined,
              publish: publish("fetching")
            }
            // A retried range counts again; the figure never passes the total.
            const count = (bytes: number) => {
              entry.fresh += bytes
              set(state.total, state.total === undefined ? state.done + bytes : Math.min(state.total, state.done + bytes))
            }
            watches.add(entry)
            // The watcher is interruptible whatever region the copy runs in: a copy never waits for it.
            const started = watching ? Effect.void : Effect.asVoid(Effect.forkIn(Effect.interruptible(watch), scope))
            watching = true
            return Effect.zipRight(
              started,
              Effect.ensuring(
                copy(count, (stalled) => void (entry.stalled = stalled)),
                Effect.sync(() => void watches.delete(entry))
              )
            )
          })
      }
    }
  }
})

/**
 * A stall: no byte for `seconds`.
 *
 * @internal
 */
export const stalled = (seconds: number): Retryable =>
  new Retryable({ reason: `no bytes for ${seconds} s`, stalledSeconds: seconds })

/**
 * Streams a body into a file: each batch of chunks that arrived together is
 * hashed (synchronously, by `onBytes`) and written with one call, while the
 * network keeps reading ahead into a small bounded buffer. Progress and
 * stalls are the load's watcher's, as for the Node drains
 * (`FileTracker.watched`): the bytes are counted as they arrive, and a stall
 * ends the transfer.
 *
 * @internal
 */
export const drain = <E, E2>(options: {
  readonly body: Stream.Stream<Uint8Array, E>
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, E2>
  readonly onBytes: (chunk: Uint8Array) => void
  readonly progress: FileTracker
  readonly stallTimeout: Duration.Duration
}): Effect.Effect<number, E | E2 | Retryable> =>
  options.progress.watched(options.stallTimeout, (count, onStall) =>
    Effect.flatMap(Deferred.make<never, Retryable>(), (stall) => {
      onStall(() => Deferred.unsafeDone(stall, Effect.fail(stalled(Duration.toSeconds(options.stallTimeout)))))
      let written = 0
      const run = options.body.pipe(
        // Counted as they arrive, before the read-ahead buffer (a slow write is no stall).
        Stream.mapChunks((chunk) => {
          for (const part of chunk) count(part.byteLength)
          return chunk
        }),
        Stream.bufferChunks({ capacity: 4 }),
        Stream.runForEachChunk((chunk) => {
          const parts = Chunk.toReadonlyArray(chunk)
          let size = 0
          for (const part of parts) {
            options.onBytes(part)
            size += part.byteLength
          }
          written += size
          return options.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size))
        }),
        Effect.map(() => written)
      )
      return Effect.raceFirst(run, Deferred.await(stall))
    }))

/**
 * A Content-Range: `bytes 100-199/1000` (a 206: `start` and `end`, end
 * exclusive, and the total) or `bytes *\/1000` (a 416: the total only). A
 * total of `*` is unknown. `undefined` when absent or malformed.
 *
 * @internal
 */
export const parseContentRange = (value: string | undefined): {
  readonly start: number | undefined
  readonly end: number | undefined
  readonly total: number | undefined
} | undefined => {
  const match = value === undefined ? null : /^bytes (?:(\d+)-(\d+)|\*)\/(\d+|\*)$/.exec(value.trim())
  if (match === null) return undefined
  return {
    start: match[1] === undefined ? undefined : Number(match[1]),
    end: match[2] === undefined ? undefined : Number(match[2]) + 1,
    total: match[3] === "*" ? undefined : Number(match[3])
  }
}
