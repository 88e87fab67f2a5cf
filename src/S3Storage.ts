/**
 * The S3-compatible storage (AWS S3, MinIO, Ceph, R2, …): lists the objects
 * under a prefix, selects them with a mask (the Disk storage's semantics on
 * key names), and delivers them through a local cache by path or as bytes.
 *
 * - Every matching key, however many (paginated listing).
 * - Objects fetched with bounded concurrency; large ones as parallel ranged
 *   GETs pinned to the listed ETag (If-Match), so all parts come from one
 *   version; small ones checked against their MD5 ETag when they have one.
 * - All or nothing: the set is staged in full, then made visible at once
 *   (a new snapshot, and an atomic switch of `current.json`). A failed or
 *   interrupted load leaves the previous complete snapshot and no partial one.
 * - Cache keyed by ETag: unchanged objects are not fetched again (an
 *   unchanged set reuses the snapshot; a changed one links the unchanged
 *   files into the new snapshot).
 * - One fetch at a time per bucket and prefix, across fibers and processes.
 *
 * Built on @effect-aws/client-s3 (the AWS SDK v3 and its SigV4 signing).
 *
 * @since 0.2.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import type * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as declare_ from "./internal/declare.js"
import * as mask_ from "./internal/mask.js"
import * as options_ from "./internal/options.js"
import { aliasConflicts, PrefixInside, Secret } from "./internal/options.js"
import * as read_ from "./internal/read.js"
import * as unpacking from "./internal/unpacking.js"
import * as snapshot from "./internal/snapshot.js"
import * as internal from "./internal/storage.js"
import * as StorageError from "./StorageError.js"

/**
 * @since 0.2.0
 * @category constants
 */
export const storageType = "s3"


const KeyPrefix = PrefixInside("key prefix", "bucket")

/**
 * `storage_kwargs` of the S3 storage. Unknown keys are rejected.
 *
 * - `bucket` (required); `prefix` (mlup's `path_to_files` is accepted for it):
 *   a key (a single file) or a folder of keys; default the whole bucket.
 * - `file_mask` (or `files_mask`): a regular expression searched in each name
 *   below the prefix (or, for a single key, in the key); default mlup's.
 * - `endpoint` (MinIO, Ceph, R2…): else `AWS_ENDPOINT_URL_S3`,
 *   `AWS_ENDPOINT_URL` or the profile's `endpoint_url`; `path_style`
 *   (default: true when a custom endpoint is in effect). `region`: else
 *   `AWS_REGION`, the profile's `region`, `AWS_DEFAULT_REGION`, else
 *   `us-east-1` for a custom endpoint (none at all: `InvalidStorageOptions`).
 *   Region redirects are followed.
 * - `ca_bundle`: as the HTTP storage (also `AWS_CA_BUNDLE`, `SSL_CERT_FILE`);
 *   proxies from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`.
 * - `access_key_id`, `secret_access_key`, `session_token`: secrets (Redacted).
 *   Without them the AWS SDK's default provider chain applies (environment,
 *   profile, web identity, instance metadata).
 * - `need_load_file` (false), `cache` (true), `cache_dir`, `offline` (false): as
 *   the HTTP storage (`cache: false`: straight into memory, no disk).
 * - `concurrency` (8 objects at once), `part_size_mb` (16),
 *   `part_concurrency` (8), `multipart_threshold_mb` (64): ranged GETs.
 * - `stall_timeout` (60 s), `retries` (5).
 * - `lock_timeout` (1800 s) and `verify` (`"changed"` or `"always"`): as the
 *   HTTP storage.
 *
 * The options every remote storage shares have one set of bounds and
 * defaults (`internal/options.ts`, `transferFields`).
 *
 * @since 0.2.0
 * @category schemas
 */
export const Kwargs = Schema.Struct({
  bucket: Schema.String.pipe(Schema.minLength(1, { message: () => "must not be empty" })).annotations({
    missingMessage: () => "is missing: give the bucket that holds the model"
  }),
  prefix: Schema.optionalWith(KeyPrefix, { exact: true }),
  path_to_files: Schema.optionalWith(KeyPrefix, { exact: true }),
  file_mask: Schema.optionalWith(options_.Mask, { exact: true }),
  files_mask: Schema.optionalWith(options_.Mask, { exact: true }),
  endpoint: Schema.optionalWith(
    Schema.String.pipe(Schema.filter((value) => URL.canParse(value) || "is not a valid URL")),
    { exact: true }
  ),
  region: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  path_style: Schema.optionalWith(Schema.Boolean, { exact: true }),
  access_key_id: Schema.optionalWith(Secret, { exact: true }),
  secret_access_key: Schema.optionalWith(Secret, { exact: true }),
  session_token: Schema.optionalWith(Secret, { exact: true }),
  ...options_.transferFields
})

/**
 * The S3 storage's kwargs, decoded: the bucket, its endpoint and credentials, and the options every remote storage shares.
 *
 * @since 0.2.0
 * @category models
 */
export type Kwargs = typeof Kwargs.Type

/**
 * What only code can give the S3 storage: a retry Schedule and a client of its own.
 *
 * @since 0.5.0
 * @category models
 */
export interface Extra extends declare_.WithRetrySchedule {
  /**
   * An S3 client of the application's own (custom credential providers,
   * request handlers, retries): used as it is, and never destroyed by the
   * storage. Without one, the storage makes a client per load and destroys it
   * when the load's scope closes.
   */
  readonly client?: S3Client | undefined
}

/**
 * Options for `make` and `layer`: the kwargs in camelCase (`part_size_mb` → `partSizeMb`), durations
 * as Effect Durations (`"30 seconds"`), and `Extra` (derived from `Kwargs`: code and configuration
 * take the same options).
 *
 * @since 0.2.0
 * @category models
 */
export type Options = declare_.OptionsOf<typeof Kwargs.Encoded> & Extra

/**
 * An AWS SDK v3 `S3Client` (from `@aws-sdk/client-s3`), as the storage needs
 * it. Declared by its shape, so that the library's declarations need no SDK
 * installed: an application without S3 type-checks without it, and every
 * `S3Client` is one.
 *
 * @since 0.5.0
 * @category models
 */
export interface S3Client {
  readonly config: object
  readonly middlewareStack: object
  send(command: never, ...rest: ReadonlyArray<never>): Promise<unknown>
  destroy(): void
}

const issue = (field: string, problem: string) => new StorageError.OptionIssue({ field, problem })

/** The module that uses the AWS SDK, beside this one. */
const sdkPart = "./internal/s3.js"

/**
 * An S3 storage from decoded kwargs (and, from code, a retry Schedule).
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeResolved = (
  kwargs: Kwargs,
  retrySchedule?: Schedule.Schedule<unknown, unknown>,
  client?: S3Client
): Effect.Effect<internal.Service, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  makeFor(storageType, kwargs, retrySchedule, client)

/**
 * The S3 storage's constructor, for S3 itself and for the stores that speak
 * its API under their own name (Google Cloud Storage).
 *
 * @internal
 */
export const makeFor = (
  storageType: "s3" | "gcs",
  kwargs: Kwargs,
  retrySchedule?: Schedule.Schedule<unknown, unknown>,
  client?: S3Client
): Effect.Effect<internal.Service, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const problems = [...aliasConflicts(kwargs), ...options_.deliveryConflicts(kwargs)]
    const keys = [kwargs.access_key_id, kwargs.secret_access_key]
    if (keys.some((key) => key !== undefined) && keys.some((key) => key === undefined)) {
      problems.push(issue(
        kwargs.access_key_id === undefined ? "access_key_id" : "secret_access_key",
        "is missing: give both access_key_id and secret_access_key, or neither (the AWS default chain)"
      ))
    }
    if (problems.length > 0) {
      return yield* new StorageError.InvalidStorageOptions({ storageType, issues: problems })
    }
    const prefix = (kwargs.prefix ?? kwargs.path_to_files ?? "").replace(/^\/+/, "")
    const mask = kwargs.file_mask ?? kwargs.files_mask ?? mask_.compileDefault()
    const settings = {
      storageType,
      bucket: kwargs.bucket,
      prefix,
      // With unpacking on, the archives too (the mask selects among their files).
      mask: unpacking.sourceMask(kwargs.unpack, mask),
      endpoint: kwargs.endpoint,
      region: kwargs.region,
      pathStyle: kwargs.path_style,
      client,
      caBundle: kwargs.ca_bundle,
      credentials: kwargs.access_key_id !== undefined && kwargs.secret_access_key !== undefined
        ? {
          accessKeyId: kwargs.access_key_id,
          secretAccessKey: kwargs.secret_access_key,
          sessionToken: kwargs.session_token
        }
        : undefined,
      ...(yield* snapshot.settingsOf(kwargs, retrySchedule))
    }
    // The AWS SDK (an optional peer dependency) is loaded only when an S3
    // storage is made, by a path bundlers do not follow: an application that
    // uses no S3 storage neither installs nor bundles it.
    const s3 = yield* Effect.tryPromise({
      try: () => import(/* @vite-ignore */ /* webpackIgnore: true */ new URL(sdkPart, import.meta.url).href) as Promise<typeof import("./internal/s3.js")>,
      catch: (cause) =>
        new StorageError.InvalidStorageOptions({
          storageType,
          issues: [
            issue(
              "storage_type",
              `the ${storageType === "gcs" ? "GCS" : "S3"} storage needs the AWS SDK: npm install @aws-sdk/client-s3@^3 @effect-aws/client-s3@^1.11 ` +
                `(in a bundled application, keep mlup-storage external) [${String((cause as { code?: unknown })?.code ?? cause)}]`
            )
          ]
        })
    })
    return yield* read_.remoteStorage(storageType, kwargs, yield* s3.make(settings), { mask, maskField: "file_mask" })
  })

/**
 * The S3 storage (and S3-compatible stores: MinIO, Ceph, R2), declared once:
 * `make(options)` builds one (invalid options fail with
 * `InvalidStorageOptions`); `layer(options)` takes `FileSystem` and `Path`
 * from the application and runs on Node (the AWS SDK on node:http agents;
 * `NodeStorage.layerS3` provides Node's); `layerConfig(config)` takes each
 * option as a `Config` (`Config.succeed` for a constant), as
 * `PgClient.layerConfig` does: a missing or malformed value is a
 * `ConfigError`; `definition` is what a `Selection` registry takes.
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * S3Storage.layerConfig({
 *   bucket: Config.string("MODEL_BUCKET"),
 *   prefix: Config.string("MODEL_PREFIX"),
 *   accessKeyId: Config.redacted("MINIO_ACCESS_KEY"),
 *   secretAccessKey: Config.redacted("MINIO_SECRET_KEY")
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const { definition, layer, layerConfig, make }: declare_.Declared<Options, Kwargs> = declare_.declare(storageType, {
  aliases: ["S3Storage", "minio"],
  kwargs: Kwargs,
  extras: ["retrySchedule", "client"],
  build: (kwargs, extra: Extra) => makeResolved(kwargs, extra.retrySchedule, extra.client)
})

