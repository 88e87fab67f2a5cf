/**
 * Progress of remote transfers, observable as a Stream.
 *
 * Remote storages publish an `Event` as bytes arrive (at most every 100 ms per
 * file, and always at the start and the end of each file) to the `Progress`
 * service in their context. By default nobody listens and publishing costs
 * nothing; provide `Progress.layer` and subscribe to watch:
 *
 * ```ts
 * const progress = yield* Progress.Progress
 * const events = yield* progress.subscribe          // subscribe before the load starts
 * yield* Effect.fork(Stream.runForEach(events, (e) => Console.log(`${e.overallDone}/${e.overallTotal}`)))
 * yield* storage.load
 * ```
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * Where one file of a load stands, and where the whole load stands.
 * `total` is undefined while the size is not known yet.
 *
 * @since 0.2.0
 * @category models
 */
export interface Event {
  /** The remote location (URL, `s3://bucket/key`). */
  readonly location: string
  /** The file's name as it is delivered. */
  readonly name: string
  readonly done: number
  readonly total: number | undefined
  /** All files of the load: bytes done and total (files of unknown size count with what is known). */
  readonly overallDone: number
  readonly overallTotal: number
  /**
   * `fetching` while bytes arrive, `cached` when the cached copy was reused,
   * `done` when complete; `waiting` (since 0.5.0) while a load into memory
   * waits for its share of the `MemoryBudget`.
   */
  readonly phase: "waiting" | "fetching" | "cached" | "done"
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Service {
  readonly publish: (event: Event) => Effect.Effect<void>
  /** Subscribes now; the stream has every event published from then on, until the scope closes. */
  readonly subscribe: Effect.Effect<Stream.Stream<Event>, never, Scope.Scope>
}

/**
 * The progress service. Its default publishes nowhere.
 *
 * @since 0.2.0
 * @category tags
 */
export class Progress extends Context.Reference<Progress>()("mlup-storage/Progress", {
  defaultValue: (): Service => ({ publish: () => Effect.void, subscribe: Effect.succeed(Stream.empty) })
}) {}

/**
 * A progress service backed by a sliding PubSub: a slow subscriber misses old
 * events, never slows the transfer.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: Effect.Effect<Service> = Effect.map(PubSub.sliding<Event>(4096), (pubsub) => ({
  publish: (event) => Effect.asVoid(PubSub.publish(pubsub, event)),
  subscribe: Effect.map(PubSub.subscribe(pubsub), (queue) => Stream.fromQueue(queue))
}))

/**
 * @since 0.2.0
 * @category layers
 */
export const layer: Layer.Layer<Progress> = Layer.effect(Progress, make)
