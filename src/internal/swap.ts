/**
 * A model that follows its storage (issue 21): each version `watch` delivers
 * is deserialized in a scope of its own, and switched in only once that
 * succeeded; the version it replaces is closed (its resources freed) once
 * the users that were running with it are done. A version that fails to
 * deserialize leaves the current one serving, and is reported. At most two
 * versions are alive at once: the next is not asked for before the one
 * replaced was closed.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as LoadedFile from "../LoadedFile.js"
import type { HotSwapOptions, Version } from "../Storage.js"
import type * as StorageError from "../StorageError.js"
import type { Storage } from "./storage.js"
import * as watch_ from "./watch.js"

/** @internal */
export type Swap<E> =
  | { readonly _tag: "Switched"; readonly version: number; readonly digest: string }
  | { readonly _tag: "Rejected"; readonly version: number; readonly digest: string; readonly error: E }

/** @internal */
export interface HotModel<M, E> {
  readonly use: <A, E2, R>(f: (model: M, version: number) => Effect.Effect<A, E2, R>) => Effect.Effect<A, E2, R>
  readonly version: Effect.Effect<number>
  readonly changes: Stream.Stream<Swap<E>>
}

interface Held<M> {
  readonly model: M
  readonly version: number
  readonly scope: Scope.CloseableScope
  users: number
  retired: boolean
  readonly closed: Deferred.Deferred<void>
}

/** @internal */
export const hotSwap = <M, E, R>(
  deserialize: (files: ReadonlyArray<LoadedFile.LoadedFile>) => Effect.Effect<M, E, R | Scope.Scope>,
  options: HotSwapOptions = {}
): Effect.Effect<HotModel<M, E>, StorageError.StorageError | E, Storage | Scope.Scope | Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const pull = yield* Stream.toPull(watch_.watch(options))
    const changes = yield* PubSub.unbounded<Swap<E>>()
    const nextVersion = Effect.flatMap(pull, (chunk) => Effect.succeed(Array.from(chunk)[0]!)).pipe(
      Effect.catchAll((error) => (Option.isSome(error) ? Effect.fail(error.value) : Effect.never))
    )
    // A version deserialized in a scope of its own (closed again if that failed).
    const open = (version: Version) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const exit = yield* Effect.exit(Scope.extend(deserialize(version.files), scope))
        // Its raw bytes dropped once deserialized (or not), as mlup does; kept with `keepFiles`.
        if (options.keepFiles !== true || Exit.isFailure(exit)) yield* version.release
        if (Exit.isFailure(exit)) {
          yield* Scope.close(scope, exit)
          return yield* Effect.failCause(exit.cause)
        }
        const held: Held<M> = {
          model: exit.value,
          version: version.version,
          scope,
          users: 0,
          retired: false,
          closed: yield* Deferred.make<void>()
        }
        return held
      })
    const close = (held: Held<M>) => Effect.zipRight(Scope.close(held.scope, Exit.void), Deferred.succeed(held.closed, undefined))

    const first = yield* nextVersion
    let current = yield* open(first)
    yield* PubSub.publish(changes, { _tag: "Switched", version: first.version, digest: first.digest })
    yield* Effect.addFinalizer(() => close(current))

    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const version = yield* nextVersion
      const opened = yield* Effect.either(open(version))
      if (opened._tag === "Left") {
        yield* Effect.logWarning(`Version ${version.version} could not be deserialized; version ${current.version} goes on serving`)
        yield* PubSub.publish(changes, { _tag: "Rejected", version: version.version, digest: version.digest, error: opened.left })
        return
      }
      const before = current
      current = opened.right
      before.retired = true
      yield* PubSub.publish(changes, { _tag: "Switched", version: version.version, digest: version.digest })
      if (before.users === 0) yield* close(before)
      // At most two versions alive: the next is asked for once the one replaced is closed.
      yield* Deferred.await(before.closed)
    })).pipe(Effect.catchAllCause((cause) => Effect.logError("Watching the storage ended", cause))))

    const use = <A, E2, R2>(f: (model: M, version: number) => Effect.Effect<A, E2, R2>) =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          const held = current
          held.users++
          return held
        }),
        (held) => f(held.model, held.version),
        (held) => Effect.suspend(() => (--held.users === 0 && held.retired ? close(held) : Effect.void))
      )
    return {
      use,
      version: Effect.sync(() => current.version),
      changes: Stream.fromPubSub(changes)
    } satisfies HotModel<M, E>
  })
