/**
 * Google Cloud Storage, through its S3-compatible XML API
 * (`https://storage.googleapis.com`) with HMAC keys: the S3 storage (the same
 * listing, masks, snapshots, ranged parallel downloads, resume, lock and
 * offline mode) under GCS's own rules.
 *
 * - The endpoint is `https://storage.googleapis.com` unless `endpoint` says
 *   otherwise; the AWS variables (`AWS_ENDPOINT_URL*`, `AWS_REGION`, profiles)
 *   are never read: they name AWS or another store.
 * - Credentials are HMAC keys (a service account's or a user's): the kwargs,
 *   else `GCS_ACCESS_KEY_ID` and `GCS_SECRET_ACCESS_KEY`. The AWS credential
 *   chain is never consulted (AWS keys are not sent to Google). Without keys,
 *   requests go unsigned: public buckets only.
 * - Region `auto`, path-style addressing; the AWS SDK's CRC32 checksums off
 *   (GCS does not use them).
 * - An object uploaded whole has its MD5 as ETag, checked when it is fetched;
 *   a composite object's (parallel composite uploads) is not an MD5, and only
 *   its sha256 is recorded.
 *
 * URI: `gs://bucket/prefix`.
 *
 * @since 0.5.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Schedule from "effect/Schedule"
import * as declare_ from "./internal/declare.js"
import * as options_ from "./internal/options.js"
import * as internal from "./internal/storage.js"
import * as S3Storage from "./S3Storage.js"
import * as StorageError from "./StorageError.js"

/**
 * @since 0.5.0
 * @category constants
 */
export const storageType = "gcs"

/**
 * GCS's XML API.
 *
 * @since 0.5.0
 * @category constants
 */
export const defaultEndpoint = "https://storage.googleapis.com"

/**
 * `storage_kwargs` of the GCS storage: the S3 storage's, without `region`,
 * `path_style` and `session_token` (GCS has no use for them).
 * `access_key_id` / `secret_access_key` are the HMAC key's access ID and
 * secret.
 *
 * @since 0.5.0
 * @category schemas
 */
export const Kwargs = S3Storage.Kwargs.omit("region", "path_style", "session_token")

/**
 * The GCS storage's kwargs, decoded: the S3 storage's, without what GCS's XML API has no use for (region, path style, session token).
 *
 * @since 0.5.0
 * @category models
 */
export type Kwargs = typeof Kwargs.Type

/**
 * What only code can give the GCS storage: a retry Schedule.
 *
 * @since 0.5.0
 * @category models
 */
export interface Extra extends declare_.WithRetrySchedule {
}

/**
 * The GCS storage's options in code, derived from its `Kwargs` (camelCase, Durations) plus `Extra`.
 *
 * @since 0.5.0
 * @category models
 */
export type Options = declare_.OptionsOf<typeof Kwargs.Encoded> & Extra

// The HMAC key from the environment, when the kwargs give none.
const keysFromEnvironment = Effect.gen(function*() {
  const read = (name: string) =>
    Effect.map(options_.envString(name), (value) => Option.getOrUndefined(Option.map(value, Redacted.make)))
  return { accessKeyId: yield* read("GCS_ACCESS_KEY_ID"), secretAccessKey: yield* read("GCS_SECRET_ACCESS_KEY") }
})

/**
 * A GCS storage from decoded kwargs (and, from code, a retry Schedule).
 *
 * @since 0.5.0
 * @category constructors
 */
export const makeResolved = (
  kwargs: Kwargs,
  retrySchedule?: Schedule.Schedule<unknown, unknown>
): Effect.Effect<internal.Service, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const given = kwargs.access_key_id !== undefined || kwargs.secret_access_key !== undefined
    const keys = given ? { accessKeyId: kwargs.access_key_id, secretAccessKey: kwargs.secret_access_key } : yield* keysFromEnvironment
    if ((keys.accessKeyId === undefined) !== (keys.secretAccessKey === undefined)) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType,
        issues: [
          new StorageError.OptionIssue({
            field: keys.accessKeyId === undefined ? "access_key_id" : "secret_access_key",
            problem: given
              ? "is missing: give both parts of the HMAC key (access_key_id and secret_access_key), or neither"
              : "is missing: GCS_ACCESS_KEY_ID and GCS_SECRET_ACCESS_KEY must be set together"
          })
        ]
      })
    }
    return yield* S3Storage.makeFor(storageType, {
      ...kwargs,
      endpoint: kwargs.endpoint ?? defaultEndpoint,
      ...(keys.accessKeyId === undefined ? {} : { access_key_id: keys.accessKeyId }),
      ...(keys.secretAccessKey === undefined ? {} : { secret_access_key: keys.secretAccessKey })
    }, retrySchedule)
  })

/**
 * The GCS storage (its XML API, with HMAC keys), declared once: `make`
 * (invalid options are `InvalidStorageOptions`), `layer` (on Node, through
 * the AWS SDK; `FileSystem` and `Path` from the application, or
 * `NodeStorage.layerGcs`), `layerConfig` (each option a `Config`) and the
 * `definition` a `Selection` registry takes.
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * GcsStorage.layerConfig({
 *   bucket: Config.string("MODEL_BUCKET"),
 *   accessKeyId: Config.redacted("HMAC_ACCESS_ID"),
 *   secretAccessKey: Config.redacted("HMAC_SECRET")
 * })
 * ```
 *
 * @since 0.5.0
 * @category constructors
 */
export const { definition, layer, layerConfig, make }: declare_.Declared<Options, Kwargs> = declare_.declare(storageType, {
  aliases: ["GcsStorage", "gs", "google"],
  kwargs: Kwargs,
  extras: ["retrySchedule"],
  build: (kwargs, extra: Extra) => makeResolved(kwargs, extra.retrySchedule)
})

