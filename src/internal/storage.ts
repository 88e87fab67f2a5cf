import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { GarbageCollector } from "../GarbageCollector.js"
import type * as LoadedFile from "../LoadedFile.js"
import type { StorageError } from "../StorageError.js"

/** @internal */
export interface Service {
  readonly storageType: string
  readonly load: Effect.Effect<ReadonlyArray<LoadedFile.LoadedFile>, StorageError, Scope.Scope>
  readonly loadBytesSingleFile: (path: string) => Effect.Effect<LoadedFile.LoadedFile, StorageError, Scope.Scope>
}

/** @internal */
export class Storage extends Context.Tag("mlup-storage/Storage")<Storage, Service>() {}

/** @internal */
export const make = (impl: Service): Effect.Effect<Service> =>
  // A Context.Reference: its default applies when no layer provides one.
  Effect.contextWith((context: Context.Context<never>) => {
    const gc = Context.get(context, GarbageCollector)
    // Added first, so it runs last: after every release the scope holds.
    const collectOnClose = Effect.addFinalizer(() => gc.collect)
    const attributes = { storageType: impl.storageType }
    return Storage.of({
      storageType: impl.storageType,
      load: collectOnClose.pipe(
        Effect.zipRight(impl.load),
        Effect.withSpan("mlup-storage/Storage.load", { attributes })
      ),
      loadBytesSingleFile: (path) =>
        collectOnClose.pipe(
          Effect.zipRight(impl.loadBytesSingleFile(path)),
          Effect.withSpan("mlup-storage/Storage.loadBytesSingleFile", { attributes: { ...attributes, path } })
        )
    })
  })
