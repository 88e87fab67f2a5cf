/**
 * The garbage collector, as a service.
 *
 * A storage runs it once when the scope of a `load` closes, after the raw
 * buffers it handed out were released. Making it a service lets a Node program
 * run the real collector (see `mlup-storage/node`) and lets tests count calls.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Runs one full collection. Never fails. */
  readonly collect: Effect.Effect<void>
}

/**
 * A collector from a synchronous function (for example `globalThis.gc`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (collect: () => void): Service => ({ collect: Effect.sync(collect) })

/**
 * The collector a storage runs when the scope of a `load` closes.
 *
 * It has a default, so storages need no layer for it: `globalThis.gc` when the
 * process runs with `--expose-gc`, otherwise nothing. `mlup-storage/node`
 * provides one that always works on Node; `layerTest` one that counts calls.
 *
 * @since 0.1.0
 * @category tags
 */
export class GarbageCollector extends Context.Reference<GarbageCollector>()("mlup-storage/GarbageCollector", {
  defaultValue: (): Service => make(() => (globalThis as { gc?: () => void }).gc?.())
}) {}

/**
 * A collector that does nothing: memory is left to the runtime's own schedule.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNoop: Layer.Layer<GarbageCollector> = Layer.succeed(GarbageCollector, make(() => {}))

/**
 * The counter of a test collector.
 *
 * @since 0.1.0
 * @category tags
 */
export class TestGarbageCollector extends Context.Tag("mlup-storage/TestGarbageCollector")<
  TestGarbageCollector,
  {
    /** How many times `collect` ran. */
    readonly calls: Effect.Effect<number>
  }
>() {}

/**
 * A collector for tests: it collects nothing and counts its calls, which
 * `TestGarbageCollector` reads.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerTest: Layer.Layer<GarbageCollector | TestGarbageCollector> = Layer.effectContext(
  Effect.sync(() => {
    let calls = 0
    return Context.make(GarbageCollector, make(() => {
      calls++
    })).pipe(Context.add(TestGarbageCollector, { calls: Effect.sync(() => calls) }))
  })
)
