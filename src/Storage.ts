/**
 * The `Storage` service: what every storage provides, and what an
 * application's code asks for. Selecting a storage from mlup's pair
 * `{ storage_type, storage_kwargs }` is the `Selection` module's (its
 * functions are still reachable here, under their old names).
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type * as definition_ from "./internal/definition.js"
import * as internal from "./internal/storage.js"
import * as swap_ from "./internal/swap.js"
import * as watch_ from "./internal/watch.js"
import type * as LoadedFile from "./LoadedFile.js"
import type * as StorageError from "./StorageError.js"
import * as selection_ from "./Selection.js"

/**
 * The service: `load` delivers the model's files as `LoadedFile`s, within a
 * scope. When that scope closes, the raw bytes it handed out are released and
 * the garbage collector runs once.
 *
 * - `load`: every file of the model (mlup's `load`), in a stable sorted order.
 * - `loadBytesSingleFile(path)`: one file (mlup's `load_bytes_single_file`),
 *   handed over as `load` would hand it over.
 *
 * @since 0.1.0
 * @category tags
 */
export const Storage: typeof internal.Storage = internal.Storage

/**
 * @since 0.1.0
 * @category tags
 */
export type Storage = internal.Storage

/**
 * The operations of a storage.
 *
 * @since 0.1.0
 * @category models
 */
export type Service = internal.Service

/**
 * Builds a storage from its operations, adding what every storage guarantees:
 * the garbage collector runs once when the scope of `load` (or of
 * `loadBytesSingleFile`) closes, after the releases of that scope, and each
 * call is traced as a span. Build `Bytes` files with `LoadedFile.bytes` so
 * they are released with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (impl: Service) => Effect.Effect<Service> = internal.make

/**
 * What a storage's constructor may use: `FileSystem`, `Path` and
 * `HttpClient` from @effect/platform. On Node, `NodeStorage.layer` provides
 * them all.
 *
 * @since 0.2.0
 * @category models
 */
export type Requirements = definition_.Requirements

/**
 * @deprecated Since 0.5.0: `Selection.StorageDefinition`.
 * @since 0.1.0
 * @category models
 */
export type StorageDefinition<Kwargs = any> = selection_.StorageDefinition<Kwargs>

/**
 * @deprecated Since 0.5.0: `Selection.define`.
 * @since 0.1.0
 * @category constructors
 */
export const define = selection_.define

/**
 * @deprecated Since 0.5.0: `Selection.isStorageDefinition`.
 * @since 0.1.0
 * @category refinements
 */
export const isStorageDefinition = selection_.isStorageDefinition

/**
 * @deprecated Since 0.5.0: `Selection.builtins`.
 * @since 0.1.0
 * @category definitions
 */
export const builtins = selection_.builtins

/**
 * @deprecated Since 0.5.0: `Selection.Selection`.
 * @since 0.1.0
 * @category schemas
 */
export const Selection = selection_.Selection

/**
 * @deprecated Since 0.5.0: `Selection.Selection`.
 * @since 0.1.0
 * @category models
 */
export type Selection = selection_.Selection

/**
 * @deprecated Since 0.5.0: `Selection.SelectionOptions`.
 * @since 0.1.0
 * @category models
 */
export type SelectionOptions = selection_.SelectionOptions

/**
 * @deprecated Since 0.5.0: `Selection.resolve`.
 * @since 0.1.0
 * @category selection
 */
export const resolve = selection_.resolve

/**
 * @deprecated Since 0.5.0: `Selection.Validated`.
 * @since 0.1.0
 * @category selection
 */
export type Validated = selection_.Validated

/**
 * @deprecated Since 0.5.0: `Selection.validate`.
 * @since 0.1.0
 * @category selection
 */
export const validate = selection_.validate

/**
 * @deprecated Since 0.5.0: `Selection.fromSelection`.
 * @since 0.1.0
 * @category selection
 */
export const fromSelection = selection_.fromSelection

/**
 * @deprecated Since 0.5.0: `Selection.layerFromSelection`.
 * @since 0.1.0
 * @category layers
 */
export const layerFromSelection = selection_.layerFromSelection

/**
 * @deprecated Since 0.5.0: `Selection.ConfigOptions`.
 * @since 0.1.0
 * @category models
 */
export type ConfigOptions = selection_.ConfigOptions

/**
 * @deprecated Since 0.5.0: `Selection.selectionFromConfig`.
 * @since 0.1.0
 * @category selection
 */
export const selectionFromConfig = selection_.selectionFromConfig

/**
 * @deprecated Since 0.5.0: `Selection.fromConfig`.
 * @since 0.1.0
 * @category selection
 */
export const fromConfig = selection_.fromConfig

/**
 * @deprecated Since 0.5.0: `Selection.layerConfig`.
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = selection_.layerConfig

/**
 * How `watch` follows a storage.
 *
 * - `interval` (30 s): how often the storage is asked again, ±10% (through
 *   `Clock` and `Random`: a test drives it with `TestClock`).
 * - `settle` (2 s): how long a change must hold still before it is
 *   delivered: a file still being written is never delivered half-written.
 * - `onError` (`"retry"`): a failed check (a server down for a minute, a
 *   folder not there yet: the first check included) is logged and tried
 *   again at the next interval; `"fail"` ends the stream with the error.
 *
 * A storage that offers events (the Disk storage: file-system events) is
 * checked as soon as one comes, and at the interval still (events are not
 * had on every file system).
 *
 * @since 0.5.0
 * @category models
 */
export interface WatchOptions {
  readonly interval?: Duration.DurationInput | undefined
  readonly settle?: Duration.DurationInput | undefined
  readonly onError?: "retry" | "fail" | undefined
}

/**
 * How `hotSwap` follows a storage: `watch`'s options, and `keepFiles`
 * (false): keep each version's files (their raw bytes) as long as the
 * version serves, instead of releasing them once it is deserialized.
 *
 * @since 0.5.0
 * @category models
 */
export interface HotSwapOptions extends WatchOptions {
  readonly keepFiles?: boolean | undefined
}

/**
 * One version of a storage's selection: complete and verified, as `load`
 * delivers it; `digest` (sha256 over the files' names and contents) tells it
 * apart; `version` counts from 1. `release` closes its load's scope now (its
 * raw bytes released, their share of the `MemoryBudget` given back) instead
 * of when the next version is delivered: call it once the files are
 * deserialized, so that a budget needs room for one version, not two.
 *
 * @since 0.5.0
 * @category models
 */
export interface Version {
  readonly version: number
  readonly files: ReadonlyArray<LoadedFile.LoadedFile>
  readonly digest: string
  readonly release: Effect.Effect<void>
}

/**
 * The versions of the storage's selection, as a `Stream`: the first at once,
 * then one each time the selection really changed (a file touched but
 * unchanged is no change) and held still for `settle`. The storage's own
 * `load` is the change signal, at the cost of a warm load: a listing and a
 * stat per file (Disk), a conditional request per URL (HTTP), a listing of
 * ETags (S3, GCS, Azure), the revision's commit (the Hub), the tag's
 * manifest (OCI). A check takes files by path where `load` would read them
 * into memory (`need_load_file`): only a new version is read into memory. A
 * version's files stay valid until the next version is delivered (or its
 * `release`): then its load's scope is closed (its raw bytes released); at
 * most two versions are alive at once. Interrupting the stream releases the
 * last.
 *
 * @since 0.5.0
 * @category watching
 */
export const watch: (options?: WatchOptions) => Stream.Stream<Version, StorageError.StorageError, Storage> = watch_.watch

/**
 * What happened to a version a `hotSwap` saw: switched in, or rejected
 * (its deserialization failed, the error said; the version before goes on
 * serving).
 *
 * @since 0.5.0
 * @category models
 */
export type Swap<E> = swap_.Swap<E>

/**
 * A model that follows its storage: `use(f)` runs `f` with the current
 * model (the version it got stays alive until `f` is done, even when a newer
 * one is switched in meanwhile); `version` is the current version's number;
 * `changes` tells each switch and each rejected version.
 *
 * @since 0.5.0
 * @category models
 */
export interface HotModel<M, E> extends swap_.HotModel<M, E> {}

/**
 * A model that follows its storage, always ready: the first version is
 * loaded (a failed load is tried again at the interval, as `watch` does,
 * unless `onError: "fail"`) and deserialized before this succeeds (a
 * deserialization that fails is this one's failure);
 * then each new version `watch` delivers is deserialized in a scope of its
 * own, beside the one serving, and switched in only once that succeeded. The
 * version replaced is closed (its scope: its resources, its raw bytes) once
 * the `use` calls that run with it are done. A version that fails to
 * deserialize is reported (`changes`, a warning) and the current one goes on
 * serving. At most two versions are alive at once. A version's raw bytes are
 * released as soon as it is deserialized, as mlup drops them (a `MemoryBudget`
 * needs room for one version's files), unless `keepFiles` is set (for a
 * deserializer whose model keeps views of the bytes: then they live as long as
 * the version, and a budget needs room for two). Everything is released with
 * the scope.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import type * as LoadedFile from "mlup-storage/LoadedFile"
 * import * as Storage from "mlup-storage/Storage"
 *
 * // A deserialize step: its resources opened with acquireRelease, freed with the version's scope.
 * const deserialize = (files: ReadonlyArray<LoadedFile.LoadedFile>) =>
 *   Effect.acquireRelease(Effect.sync(() => ({ files: files.length })), () => Effect.log("released"))
 *
 * const program = Effect.gen(function*() {
 *   const model = yield* Storage.hotSwap(deserialize, { interval: "1 minute" })
 *   const answer = yield* model.use((current, version) => Effect.succeed(`${current.files} files, version ${version}`))
 * })
 * ```
 *
 * @since 0.5.0
 * @category watching
 */
export const hotSwap: <M, E, R>(
  deserialize: (files: ReadonlyArray<LoadedFile.LoadedFile>) => Effect.Effect<M, E, R | Scope.Scope>,
  options?: HotSwapOptions
) => Effect.Effect<HotModel<M, E>, StorageError.StorageError | E, Storage | Scope.Scope | Exclude<R, Scope.Scope>> = swap_.hotSwap
