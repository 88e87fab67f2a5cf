import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import { GarbageCollector } from "../GarbageCollector.js"
import type * as LoadedFile from "../LoadedFile.js"
import type { StorageError } from "../StorageError.js"
import * as release from "./release.js"

/** @internal */
export interface Service {
  readonly storageType: string
  readonly load: Effect.Effect<ReadonlyArray<LoadedFile.LoadedFile>, StorageError, Scope.Scope>
  readonly loadBytesSingleFile: (path: string) => Effect.Effect<LoadedFile.LoadedFile, StorageError, Scope.Scope>
  /**
   * Emits when the source may have changed (file-system events, for the Disk
   * storage): `watch` checks at once instead of waiting for its interval. It
   * ends (or fails) where no events come (a network file system): `watch`
   * polls then. Optional: a storage without it is polled.
   */
  readonly changed?: Stream.Stream<unknown, unknown, Scope.Scope> | undefined
}

/** @internal */
export class Storage extends Context.Tag("mlup-storage/Storage")<Storage, Service>() {}

/** @internal */
export const make = (impl: Service): Effect.Effect<Service> =>
  // A Context.Reference: its default applies when no layer provides one.
  Effect.contextWith((context: Context.Context<never>) => {
    const gc = Context.get(context, GarbageCollector)
    // The finalizer is added first, so it runs last: after every release the
    // scope holds. It collects only when the call handed out buffers: a load of
    // paths or of a model has nothing to give back, and skips the pause.
    const collectOnClose = <A, E>(operation: Effect.Effect<A, E, Scope.Scope>) =>
      Effect.suspend(() => {
        const tracker: release.LoadTracker = { buffers: 0 }
        // What a call that fails (or is interrupted) took is released at once, not with the caller's scope.
        return Effect.addFinalizer(() => tracker.buffers > 0 ? gc.collect : Effect.void).pipe(
          Effect.zipRight(Effect.locally(release.keptOnSuccess(operation), release.currentLoad, tracker))
        )
      })
    const attributes = { storageType: impl.storageType }
    return Storage.of({
      storageType: impl.storageType,
      ...(impl.changed === undefined ? {} : { changed: impl.changed }),
      load: collectOnClose(impl.load).pipe(
        Effect.withSpan("mlup-storage/Storage.load", { attributes })
      ),
      loadBytesSingleFile: (path) =>
        collectOnClose(impl.loadBytesSingleFile(path)).pipe(
          Effect.withSpan("mlup-storage/Storage.loadBytesSingleFile", { attributes: { ...attributes, path } })
        )
    })
  })
