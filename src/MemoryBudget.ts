/**
 * A byte budget for the memory that loads take: every load that reads a file
 * into memory (`need_load_file: true`, from the disk, the cache or straight
 * from a remote source) reserves the file's size from the budget before it
 * allocates the buffer, and gives it back when the load's scope closes (or at
 * once, when the load fails or is interrupted).
 *
 * The default budget is unbounded. With a bounded one, loads that do not fit
 * wait their turn (first come, first served: a large file is not starved by
 * small ones) instead of running the process out of memory; a file larger
 * than the whole budget fails at once, and a wait longer than the budget's
 * `timeout` fails, both with `MemoryBudgetExceeded`.
 *
 * ```ts
 * // Four models of 512 MiB, loaded at once, never take more than 1 GiB.
 * program.pipe(Effect.provide(MemoryBudget.layer({ bytes: 1024 ** 3, timeout: "10 minutes" })))
 * ```
 *
 * @since 0.5.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as StorageError from "./StorageError.js"

/**
 * @since 0.5.0
 * @category models
 */
export interface Service {
  /** The whole budget in bytes (`Infinity`: unbounded). */
  readonly bytes: number
  /** The bytes not reserved now. */
  readonly available: Effect.Effect<number>
  /**
   * Reserves `bytes` until the scope closes: at once when they are free and
   * nobody waits before this caller, else after the loads before it gave
   * enough back. `onWait` runs once when the reservation has to wait.
   */
  readonly reserve: (
    bytes: number,
    options: { readonly location: string; readonly onWait?: Effect.Effect<void> | undefined }
  ) => Effect.Effect<void, StorageError.MemoryBudgetExceeded, Scope.Scope>
}

/**
 * A budget that never waits and never refuses.
 *
 * @since 0.5.0
 * @category constructors
 */
export const unbounded: Service = {
  bytes: Number.POSITIVE_INFINITY,
  available: Effect.succeed(Number.POSITIVE_INFINITY),
  reserve: () => Effect.void
}

/**
 * The memory budget of the loads in its context. Its default is `unbounded`.
 *
 * @since 0.5.0
 * @category tags
 */
export class MemoryBudget extends Context.Reference<MemoryBudget>()("mlup-storage/MemoryBudget", {
  defaultValue: (): Service => unbounded
}) {}

interface Waiter {
  readonly bytes: number
  readonly granted: Deferred.Deferred<void>
}

/**
 * A budget of `bytes`. A reservation that waits longer than `timeout`
 * (default: as long as it takes) fails with `MemoryBudgetExceeded`; time is
 * read through `Clock` (a `TestClock` drives it in tests).
 *
 * @since 0.5.0
 * @category constructors
 */
export const make = (options: {
  readonly bytes: number
  readonly timeout?: Duration.DurationInput | undefined
}): Effect.Effect<Service> =>
  Effect.sync(() => {
    const budget = options.bytes
    const timeout = options.timeout === undefined ? undefined : Duration.decode(options.timeout)
    let available = budget
    // Strictly in arrival order: the first waiter is served before any later one.
    const waiters: Array<Waiter> = []
    const grant = Effect.suspend(() => {
      const granted: Array<Waiter> = []
      while (waiters.length > 0 && waiters[0]!.bytes <= available) {
        const waiter = waiters.shift()!
        available -= waiter.bytes
        granted.push(waiter)
      }
      return Effect.forEach(granted, (waiter) => Deferred.succeed(waiter.granted, undefined), { discard: true })
    })
    const giveBack = (bytes: number) =>
      Effect.suspend(() => {
        available += bytes
        return grant
      })
    const reserve: Service["reserve"] = (bytes, { location, onWait }) =>
      bytes <= 0 ? Effect.void : bytes > budget
        ? Effect.fail(new StorageError.MemoryBudgetExceeded({ location, bytes, budget }))
        : Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            if (waiters.length === 0 && bytes <= available) {
              available -= bytes
              return yield* Effect.addFinalizer(() => giveBack(bytes))
            }
            const waiter: Waiter = { bytes, granted: yield* Deferred.make<void>() }
            waiters.push(waiter)
            const wait = Effect.zipRight(onWait ?? Effect.void, Deferred.await(waiter.granted))
            const waited = yield* restore(
              timeout === undefined ? Effect.asSome(wait) : Effect.timeoutOption(wait, timeout)
            ).pipe(
              // Interrupted while waiting: out of the queue, and bytes granted meanwhile go back.
              Effect.onInterrupt(() => leave(waiter))
            )
            if (Option.isNone(waited)) {
              yield* leave(waiter)
              return yield* new StorageError.MemoryBudgetExceeded({
                location,
                bytes,
                budget,
                waitedSeconds: Duration.toSeconds(timeout!)
              })
            }
            yield* Effect.addFinalizer(() => giveBack(bytes))
          })
        )
    // A waiter that gives up: out of the queue, or, when it was granted in the
    // meantime, its bytes back (and the next waiters may fit now).
    const leave = (waiter: Waiter) =>
      Effect.suspend(() => {
        const at = waiters.indexOf(waiter)
        if (at >= 0) {
          waiters.splice(at, 1)
          return grant
        }
        return giveBack(waiter.bytes)
      })
    return {
      bytes: budget,
      available: Effect.sync(() => available),
      reserve
    }
  })

/**
 * A budget of `bytes` for the loads of the application.
 *
 * @since 0.5.0
 * @category layers
 */
export const layer = (options: {
  readonly bytes: number
  readonly timeout?: Duration.DurationInput | undefined
}): Layer.Layer<MemoryBudget> => Layer.effect(MemoryBudget, make(options))

/**
 * A budget whose options come from Effect's `Config`, as the storages'
 * `layerConfig` take theirs.
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * MemoryBudget.layerConfig({ bytes: Config.number("MODEL_MEMORY_BYTES"), timeout: Config.succeed("5 minutes") })
 * ```
 *
 * @since 0.5.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<{
    readonly bytes: number
    readonly timeout?: Duration.DurationInput | undefined
  }>
): Layer.Layer<MemoryBudget, ConfigError.ConfigError> =>
  Layer.effect(MemoryBudget, Effect.flatMap(Config.unwrap(config), make))
