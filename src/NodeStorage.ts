/**
 * Node wiring: the platform services the storages need (`FileSystem`, `Path`)
 * from `@effect/platform-node`, and a garbage collector that really collects,
 * with or without `--expose-gc`. Imported as `mlup-storage/node`.
 *
 * @since 0.1.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodePath from "@effect/platform-node/NodePath"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as Path from "@effect/platform/Path"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as AzureStorage from "./AzureStorage.js"
import * as DiskStorage from "./DiskStorage.js"
import * as GarbageCollector from "./GarbageCollector.js"
import * as GcsStorage from "./GcsStorage.js"
import * as HfStorage from "./HfStorage.js"
import * as OciStorage from "./OciStorage.js"
import * as HttpStorage from "./HttpStorage.js"
import type * as declare_ from "./internal/declare.js"
import * as listing from "./internal/listing.js"
import * as network_ from "./internal/network.js"
import * as MemoryStorage from "./MemoryStorage.js"
import * as S3Storage from "./S3Storage.js"
import * as Selection from "./Selection.js"
import * as Storage from "./Storage.js"
import type * as StorageError from "./StorageError.js"

let collectFunction: (() => void) | undefined

const nodeGc = (): (() => void) => {
  if (collectFunction === undefined) {
    const exposed = (globalThis as { gc?: () => void }).gc
    if (typeof exposed === "function") {
      collectFunction = exposed
    } else {
      // Expose gc to a fresh context only, then turn the flag back off.
      v8.setFlagsFromString("--expose-gc")
      collectFunction = vm.runInNewContext("gc") as () => void
      v8.setFlagsFromString("--no-expose-gc")
    }
  }
  return collectFunction
}

/**
 * A collector that runs V8's full collection, whether or not node was started
 * with `--expose-gc`. V8 returns the memory of dead ArrayBuffers from a sweep
 * that goes on after a collection; a second collection waits for that sweep,
 * so the memory is back (and `process.memoryUsage()` says so) when `collect`
 * ends.
 *
 * @since 0.1.0
 * @category garbage collector
 */
export const garbageCollector: GarbageCollector.Service = GarbageCollector.make(() => {
  const gc = nodeGc()
  gc()
  gc()
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layerGarbageCollector: Layer.Layer<GarbageCollector.GarbageCollector> = Layer.succeed(
  GarbageCollector.GarbageCollector,
  garbageCollector
)

const network: network_.Network["Type"] = {
  client: (storageType, extraCa) => Effect.map(network_.agentsFor(storageType, extraCa), network_.makeSend)
}

/**
 * What a storage needs on Node besides a collector (`Storage.Requirements`):
 * `FileSystem`, `Path` and an `HttpClient` (node:http). For tests that give
 * their own collector (`GarbageCollector.layerTest`, the contract suite of
 * `mlup-storage/testing`).
 *
 * @since 0.5.0
 * @category layers
 */
export const layerRequirements: Layer.Layer<FileSystem.FileSystem | Path.Path | HttpClient.HttpClient> = Layer.mergeAll(
  NodeFileSystem.layer,
  NodePath.layer,
  NodeHttpClient.layer,
  Layer.succeed(network_.Network, network),
  Layer.succeed(listing.Listing, listing.node)
)

/**
 * Everything a storage needs on Node: `FileSystem`, `Path`, an `HttpClient`
 * (node:http) and the collector. The remote storages' requests go through
 * node:http agents (keep-alive) that honour `HTTPS_PROXY` / `HTTP_PROXY` /
 * `NO_PROXY` and trust the CAs of `SSL_CERT_FILE` / `AWS_CA_BUNDLE` (and of
 * a storage's `ca_bundle`) besides Node's own.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<
  FileSystem.FileSystem | Path.Path | HttpClient.HttpClient | GarbageCollector.GarbageCollector
> = Layer.merge(layerRequirements, layerGarbageCollector)

/**
 * A storage's layers with Node's services provided (`FileSystem`, `Path`,
 * the HTTP client, the collector): they need nothing more.
 *
 * @since 0.5.0
 * @category models
 */
export interface OnNode<O> {
  readonly layer: declare_.LayerOf<O, never>
  readonly layerConfig: declare_.LayerConfigOf<O, never>
}

// A storage's layers with everything they need on Node provided: its Node twins.
const onNode = <O, E, R>(storage: {
  readonly layer: (options: O) => Layer.Layer<Storage.Storage, E, R>
  readonly layerConfig: (config: Config.Config.Wrap<O>) => Layer.Layer<Storage.Storage, E | ConfigError.ConfigError, R>
}) => ({
  layer: (options: O) => storage.layer(options).pipe(Layer.provide(layer)),
  layerConfig: (config: Config.Config.Wrap<O>) => storage.layerConfig(config).pipe(Layer.provide(layer))
})

/**
 * The Memory storage with Node's collector.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = <A>(model: A): Layer.Layer<Storage.Storage> =>
  MemoryStorage.layer(model).pipe(Layer.provide(layer))

/**
 * The Disk storage on Node: `layerDisk(options)`, and `layerDiskConfig(config)`, its options from
 * Effect's `Config` (since 0.4.0).
 *
 * @since 0.1.0
 * @category layers
 */
export const { layer: layerDisk, layerConfig: layerDiskConfig }: OnNode<DiskStorage.Options> = onNode(DiskStorage)

/**
 * The HTTP storage on Node (Node's HTTP client, file system and path): `layerHttp`,
 * `layerHttpConfig` (since 0.4.0).
 *
 * @since 0.2.0
 * @category layers
 */
export const { layer: layerHttp, layerConfig: layerHttpConfig }: OnNode<HttpStorage.Options> = onNode(HttpStorage)

/**
 * `S3Storage.layer` and `S3Storage.layerConfig` (since 0.4.0) with Node's services.
 *
 * @since 0.2.0
 * @category layers
 */
export const { layer: layerS3, layerConfig: layerS3Config }: OnNode<S3Storage.Options> = onNode(S3Storage)

/**
 * The GCS storage (its XML API, with HMAC keys) on Node: `layerGcs`, `layerGcsConfig`.
 *
 * @since 0.5.0
 * @category layers
 */
export const { layer: layerGcs, layerConfig: layerGcsConfig }: OnNode<GcsStorage.Options> = onNode(GcsStorage)

/**
 * The Azure Blob storage's layers on Node.
 *
 * @since 0.5.0
 * @category layers
 */
export const { layer: layerAzure, layerConfig: layerAzureConfig }: OnNode<AzureStorage.Options> = onNode(AzureStorage)

/**
 * The Hugging Face Hub storage on Node, from options in code or from `Config`.
 *
 * @since 0.5.0
 * @category layers
 */
export const { layer: layerHf, layerConfig: layerHfConfig }: OnNode<HfStorage.Options> = onNode(HfStorage)

/**
 * The OCI storage on Node, from options in code or from `Config`.
 *
 * @since 0.5.0
 * @category layers
 */
export const { layer: layerOci, layerConfig: layerOciConfig }: OnNode<OciStorage.Options> = onNode(OciStorage)

/**
 * A storage from mlup's `{ storage_type, storage_kwargs }`, on Node.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromSelection = (
  selection: Selection.Selection,
  options?: Selection.SelectionOptions
): Layer.Layer<Storage.Storage, StorageError.StorageError> =>
  Selection.layerFromSelection(selection, options).pipe(Layer.provide(layer))

/**
 * A storage from Effect's `Config` (see `Selection.fromConfig`), on Node.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options?: Selection.ConfigOptions
): Layer.Layer<Storage.Storage, StorageError.StorageError | ConfigError.ConfigError> =>
  Selection.layerConfig(options).pipe(Layer.provide(layer))

