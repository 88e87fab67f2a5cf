/**
 * mlup-storage: delivers machine-learning models from where they are kept to
 * the code that deserializes them, as Effect services.
 *
 * Node wiring lives in `mlup-storage/node` (`NodeStorage`).
 *
 * @since 0.1.0
 */

/**
 * @since 0.5.0
 */
export * as AzureStorage from "./AzureStorage.js"

/**
 * @since 0.1.0
 */
export * as DiskStorage from "./DiskStorage.js"

/**
 * @since 0.1.0
 */
export * as GarbageCollector from "./GarbageCollector.js"

/**
 * @since 0.5.0
 */
export * as GcsStorage from "./GcsStorage.js"

/**
 * @since 0.5.0
 */
export * as HfStorage from "./HfStorage.js"

/**
 * An OCI registry: models pushed as OCI artifacts (`oras push`), read by
 * digest, checked, through the cache.
 *
 * @since 0.5.0
 */
export * as OciStorage from "./OciStorage.js"

/**
 * @since 0.2.0
 */
export * as HttpStorage from "./HttpStorage.js"

/**
 * @since 0.1.0
 */
export * as LoadedFile from "./LoadedFile.js"

/**
 * @since 0.5.0
 */
export * as MemoryBudget from "./MemoryBudget.js"

/**
 * @since 0.1.0
 */
export * as MemoryStorage from "./MemoryStorage.js"

/**
 * @since 0.2.0
 */
export * as Progress from "./Progress.js"

/**
 * @since 0.1.0
 */
export * as S3Storage from "./S3Storage.js"

/**
 * @since 0.5.0
 */
export * as Selection from "./Selection.js"

/**
 * @since 0.1.0
 */
export * as Storage from "./Storage.js"

/**
 * @since 0.1.0
 */
export * as StorageError from "./StorageError.js"

/**
 * Sources as URIs (`s3://`, `https://`, `file://`), as KServe's `storage_uri`.
 *
 * @since 0.4.0
 */
export * as StorageUri from "./StorageUri.js"
