/**
 * Azure Blob Storage: lists the blobs of a container under a prefix, selects
 * them with a mask (the Disk storage's semantics on blob names), and
 * delivers them through the local cache by path or as bytes, with the S3
 * storage's engine: staged, verified (Content-MD5 when the blob has one,
 * sha256 recorded), published at once as a snapshot keyed by ETag; large
 * blobs as parallel ranged reads pinned to their ETag (If-Match) that
 * resume; one load at a time per container and prefix across processes;
 * offline from the last snapshot.
 *
 * Built on the official `@azure/storage-blob` (an optional peer dependency:
 * `npm install @azure/storage-blob@^12.28`), whose requests go through the
 * library's agents (proxies, CAs) and retries.
 *
 * URI: `az://container/prefix` (the account from the kwargs or the
 * environment), or the account's URL
 * `https://<account>.blob.core.windows.net/container/prefix`.
 *
 * @since 0.5.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as azure from "./internal/azure.js"
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
 * @since 0.5.0
 * @category constants
 */
export const storageType = "azure"


const BlobPrefix = PrefixInside("prefix", "container")

/**
 * `storage_kwargs` of the Azure storage. Unknown keys are rejected.
 *
 * - `container` (required); `prefix` (mlup's `path_to_files` is accepted for
 *   it): a blob (a single file) or a folder of blobs; default the whole
 *   container.
 * - `file_mask` (or `files_mask`): as the S3 storage; default mlup's.
 * - Where and how: `connection_string` (a secret; else
 *   `AZURE_STORAGE_CONNECTION_STRING`), or `account` (else the one `endpoint`
 *   names, else `AZURE_STORAGE_ACCOUNT`) with `account_key` (a secret; else
 *   `AZURE_STORAGE_KEY` or KServe's `AZURE_STORAGE_ACCESS_KEY`) or
 *   `sas_token` (a secret; else `AZURE_STORAGE_SAS_TOKEN`), or neither
 *   (public access). `endpoint`: the blob service's URL (an emulator's, a
 *   sovereign cloud's); default `https://<account>.blob.core.windows.net`.
 * - `need_load_file` (false), `cache` (true), `cache_dir`, `offline` (false), `concurrency`
 *   (8), `part_size_mb` (16), `part_concurrency` (8), `multipart_threshold_mb`
 *   (64), `stall_timeout` (60 s), `retries` (5), `lock_timeout` (1800 s),
 *   `verify`, `ca_bundle`: as the S3 storage.
 *
 * @since 0.5.0
 * @category schemas
 */
export const Kwargs = Schema.Struct({
  container: Schema.String.pipe(
    Schema.pattern(/^(?:\$root|\$web|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$/, {
      message: () => "must be a container name: 3 to 63 lowercase letters, digits and single hyphens"
    })
  ).annotations({ missingMessage: () => "is missing: give the container that holds the model" }),
  prefix: Schema.optionalWith(BlobPrefix, { exact: true }),
  path_to_files: Schema.optionalWith(BlobPrefix, { exact: true }),
  file_mask: Schema.optionalWith(options_.Mask, { exact: true }),
  files_mask: Schema.optionalWith(options_.Mask, { exact: true }),
  account: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^[a-z0-9]{3,24}$/, { message: () => "must be a storage account name: 3 to 24 lowercase letters and digits" })),
    { exact: true }
  ),
  account_key: Schema.optionalWith(Secret, { exact: true }),
  sas_token: Schema.optionalWith(Secret, { exact: true }),
  connection_string: Schema.optionalWith(Secret, { exact: true }),
  endpoint: Schema.optionalWith(
    Schema.String.pipe(Schema.filter((value) => /^https?:\/\//.test(value) && URL.canParse(value) || "must be an http(s) URL")),
    { exact: true }
  ),
  ...options_.transferFields
})

/**
 * The Azure storage's kwargs, decoded: the account or connection string, the container and prefix, and the shared options.
 *
 * @since 0.5.0
 * @category models
 */
export type Kwargs = typeof Kwargs.Type

/**
 * What only code can give the Azure storage: a retry Schedule and a Microsoft Entra ID credential.
 *
 * @since 0.5.0
 * @category models
 */
export interface Extra extends declare_.WithRetrySchedule {
  /**
   * Microsoft Entra ID (managed identities, workload identity, service
   * principals): a credential of the application's own, such as
   * `new DefaultAzureCredential()` from `@azure/identity`. Used with
   * `account` (or `endpoint`), over https; not with a key, SAS or connection
   * string.
   */
  readonly credential?: TokenCredential | undefined
}

/**
 * What `make`, `layer` and `layerConfig` take: `Kwargs` in camelCase, durations as Durations, and
 * `Extra` (a credential of the application's own among them).
 *
 * @since 0.5.0
 * @category models
 */
export type Options = declare_.OptionsOf<typeof Kwargs.Encoded> & Extra

/**
 * The shape of a Microsoft Entra ID credential (`@azure/core-auth`'s
 * `TokenCredential`): every `@azure/identity` credential has it.
 *
 * @since 0.5.0
 * @category models
 */
export interface TokenCredential {
  readonly getToken: (
    scopes: string | Array<string>,
    options?: never
  ) => Promise<{ readonly token: string; readonly expiresOnTimestamp: number } | null>
}

const issue = (field: string, problem: string) => new StorageError.OptionIssue({ field, problem })

/** The module that uses the Azure SDK, beside this one. */
const sdkPart = "./internal/azure.js"

const envString = (name: string) => Effect.map(options_.envString(name), Option.getOrUndefined)

/**
 * How the account is reached, from the kwargs, else the environment (as the
 * Azure CLI reads it): a connection string wins; else an account (and its
 * endpoint) with a key, a SAS token, or nothing.
 */
const accessOf = (kwargs: Kwargs, credential: TokenCredential | undefined) =>
  Effect.gen(function*() {
    const ways = [
      ["connection_string", kwargs.connection_string],
      ["account_key", kwargs.account_key],
      ["sas_token", kwargs.sas_token],
      ["credential", credential]
    ] as const
    const given = ways.filter(([, value]) => value !== undefined)
    if (given.length > 1) {
      // Named as given: the issue is on the second of them, and says which others were given.
      const names = given.map(([name]) => name)
      return yield* new StorageError.InvalidStorageOptions({
        storageType,
        issues: [
          issue(
            names[1]!,
            `is given with ${names.filter((_, i) => i !== 1).join(" and ")}: give one way to reach the account ` +
              "(connection_string, account_key, sas_token or credential)"
          )
        ]
      })
    }
    const fromEnv = (name: string) => Effect.map(envString(name), (value) => (value === undefined ? undefined : Redacted.make(value)))
    const connectionString = kwargs.connection_string ??
      (kwargs.account === undefined && kwargs.endpoint === undefined && given.length === 0
        ? yield* fromEnv("AZURE_STORAGE_CONNECTION_STRING")
        : undefined)
    if (connectionString !== undefined) {
      return { _tag: "ConnectionString", connectionString } satisfies azure.Access
    }
    // The account an endpoint names (an emulator's path, a host name) is more specific than the environment's.
    const account = kwargs.account ?? (kwargs.endpoint === undefined ? undefined : accountOfEndpoint(kwargs.endpoint)) ??
      (yield* envString("AZURE_STORAGE_ACCOUNT"))
    if (account === undefined) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType,
        issues: [
          issue(
            "account",
            "is not set: give account (or set AZURE_STORAGE_ACCOUNT), endpoint, or connection_string " +
              "(or set AZURE_STORAGE_CONNECTION_STRING)"
          )
        ]
      })
    }
    const accountKey = kwargs.account_key ?? (given.length === 0
      ? (yield* fromEnv("AZURE_STORAGE_KEY")) ?? (yield* fromEnv("AZURE_STORAGE_ACCESS_KEY"))
      : undefined)
    const sasToken = kwargs.sas_token ?? (given.length === 0 && accountKey === undefined
      ? yield* fromEnv("AZURE_STORAGE_SAS_TOKEN")
      : undefined)
    const serviceUrl = (kwargs.endpoint ?? `https://${account}.blob.core.windows.net`).replace(/\/+$/, "")
    // The SDK sends a bearer token over TLS only: said here, rather than as a failure of every request.
    if (credential !== undefined && !serviceUrl.startsWith("https:")) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType,
        issues: [issue("endpoint", "must be an https URL with a credential (a bearer token is never sent in clear)")]
      })
    }
    return { _tag: "Url", serviceUrl, account, accountKey, sasToken, credential } satisfies azure.Access
  })

// https://<account>.blob.core.windows.net, or an emulator's http://host:port/<account>.
const accountOfEndpoint = (endpoint: string): string | undefined => {
  const url = new URL(endpoint)
  const host = /^([a-z0-9]{3,24})\.blob\./.exec(url.hostname)
  if (host !== null) return host[1]
  const first = url.pathname.split("/").find((segment) => segment !== "")
  return first !== undefined && /^[a-z0-9]{3,24}$/.test(first) ? first : undefined
}

/**
 * An Azure storage from decoded kwargs (and, from code, a retry Schedule and
 * a Microsoft Entra ID credential).
 *
 * @since 0.5.0
 * @category constructors
 */
export const makeResolved = (
  kwargs: Kwargs,
  retrySchedule?: Schedule.Schedule<unknown, unknown>,
  credential?: TokenCredential
): Effect.Effect<internal.Service, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const problems = [...aliasConflicts(kwargs), ...options_.deliveryConflicts(kwargs)]
    if (problems.length > 0) return yield* new StorageError.InvalidStorageOptions({ storageType, issues: problems })
    const mask = kwargs.file_mask ?? kwargs.files_mask ?? mask_.compileDefault()
    const settings: azure.Settings = {
      access: yield* accessOf(kwargs, credential),
      container: kwargs.container,
      prefix: (kwargs.prefix ?? kwargs.path_to_files ?? "").replace(/^\/+/, ""),
      // With unpacking on, the archives too (the mask selects among their files).
      mask: unpacking.sourceMask(kwargs.unpack, mask),
      caBundle: kwargs.ca_bundle,
      ...(yield* snapshot.settingsOf(kwargs, retrySchedule))
    }
    // The Azure SDK (an optional peer dependency) is loaded only when an Azure
    // storage is made, by a path bundlers do not follow.
    const sdk = yield* Effect.tryPromise({
      try: () => import(/* @vite-ignore */ /* webpackIgnore: true */ new URL(sdkPart, import.meta.url).href) as Promise<typeof import("./internal/azure.js")>,
      catch: (cause) =>
        new StorageError.InvalidStorageOptions({
          storageType,
          issues: [
            issue(
              "storage_type",
              "the Azure storage needs the Azure SDK: npm install @azure/storage-blob@^12.28 " +
                `(in a bundled application, keep mlup-storage external) [${String((cause as { code?: unknown })?.code ?? cause)}]`
            )
          ]
        })
    })
    return yield* read_.remoteStorage(storageType, kwargs, yield* sdk.make(settings), { mask, maskField: "file_mask" })
  })

/**
 * The Azure Blob storage, declared once. `make` builds one, or fails with
 * `InvalidStorageOptions`. `layer` runs on Node (the Azure SDK on node:http
 * agents) with the application's `FileSystem` and `Path` (a test may give
 * its own; `NodeStorage.layerAzure` gives Node's). `layerConfig` reads each
 * option from a `Config`. `definition` goes into a `Selection` registry.
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * AzureStorage.layerConfig({
 *   container: Config.string("MODEL_CONTAINER"),
 *   connectionString: Config.redacted("AZURE_STORAGE_CONNECTION_STRING")
 * })
 * ```
 *
 * @since 0.5.0
 * @category constructors
 */
export const { definition, layer, layerConfig, make }: declare_.Declared<Options, Kwargs> = declare_.declare(storageType, {
  aliases: ["AzureStorage", "az", "azure_blob"],
  kwargs: Kwargs,
  extras: ["retrySchedule", "credential"],
  build: (kwargs, extra: Extra) => makeResolved(kwargs, extra.retrySchedule, extra.credential)
})

