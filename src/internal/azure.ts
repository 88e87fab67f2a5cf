/**
 * Azure Blob Storage as a source of the snapshot engine, with the official
 * `@azure/storage-blob` (an optional peer dependency, loaded only when an
 * Azure storage is made): listing by prefix, reads of a blob or a range of
 * it pinned to the listed ETag (If-Match), on the library's agents (proxies,
 * CAs) and with the library's retries.
 *
 * @internal
 */
import type { BlobServiceClient as BlobServiceClientType, ContainerClient, StoragePipelineOptions } from "@azure/storage-blob"
import { AnonymousCredential, BlobServiceClient, newPipeline, StorageSharedKeyCredential } from "@azure/storage-blob"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import type * as http from "node:http"
import type * as https from "node:https"
import * as StorageError from "../StorageError.js"
import * as errors from "./errors.js"
import * as network from "./network.js"
import * as snapshot from "./snapshot.js"
import * as transfer from "./transfer.js"

/**
 * How the storage reaches the account: a connection string, or the blob
 * service's URL with a shared key, a SAS token, or nothing (public access).
 *
 * @internal
 */
export type Access =
  | { readonly _tag: "ConnectionString"; readonly connectionString: Redacted.Redacted<string> }
  | {
    readonly _tag: "Url"
    /** The blob service: `https://<account>.blob.core.windows.net`, or an emulator's. */
    readonly serviceUrl: string
    readonly account: string
    readonly accountKey: Redacted.Redacted<string> | undefined
    readonly sasToken: Redacted.Redacted<string> | undefined
    /** Microsoft Entra ID: the application's own credential (@azure/identity's, say). */
    readonly credential?: TokenCredential | undefined
  }

/**
 * What the Azure SDK asks of a Microsoft Entra ID credential (the shape of
 * `@azure/core-auth`'s `TokenCredential`, which every `@azure/identity`
 * credential has).
 *
 * @internal
 */
export interface TokenCredential {
  readonly getToken: (
    scopes: string | Array<string>,
    options?: never
  ) => Promise<{ readonly token: string; readonly expiresOnTimestamp: number } | null>
}

/** @internal */
export interface Settings extends snapshot.Settings {
  readonly access: Access
  readonly container: string
  readonly prefix: string
  readonly mask: RegExp
  readonly caBundle: string | undefined
  /** Blobs a listing page asks for (Azure's maximum, 5,000, unless a test says otherwise). */
  readonly pageSize?: number | undefined
}

/** Where a connection string points: its BlobEndpoint, else the account's own (for the cache's key). */
export const serviceOfConnectionString = (connectionString: string): string => {
  const fields = new Map(
    connectionString.split(";").map((part) => {
      const at = part.indexOf("=")
      return [part.slice(0, at).trim().toLowerCase(), part.slice(at + 1).trim()] as const
    })
  )
  if (fields.get("usedevelopmentstorage") === "true") return "http://127.0.0.1:10000/devstoreaccount1"
  const endpoint = fields.get("blobendpoint")
  if (endpoint !== undefined && endpoint !== "") return endpoint.replace(/\/+$/, "")
  const account = fields.get("accountname") ?? "(unknown account)"
  return `${fields.get("defaultendpointsprotocol") ?? "https"}://${account}.blob.${fields.get("endpointsuffix") ?? "core.windows.net"}`
}

const quoted = (etag: string) => (etag === "" || etag.startsWith("\"") ? etag : `"${etag}"`)

/** An Azure SDK failure as the library's error: by status and the service's error code. */
const fromSdk = (location: string) => (error: unknown): StorageError.StorageError | transfer.Retryable => {
  const status = Predicate.hasProperty(error, "statusCode") && typeof error.statusCode === "number" ? error.statusCode : undefined
  const code = Predicate.hasProperty(error, "code") && typeof error.code === "string" ? error.code : undefined
  const message = errors.redactText(Predicate.hasProperty(error, "message") ? String(error.message).split("\n")[0]! : String(error))
  const reason = code === undefined ? message : `${code}: ${message}`
  return network.failureOf({
    location,
    status,
    reason: status === 412 ? "the blob changed during the load (its ETag no longer matches): load again" : reason,
    cause: error,
    unauthorized: `${reason} (give account_key, sas_token or connection_string, or set AZURE_STORAGE_KEY, ` +
      "AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING; a SAS needs the read and list permissions)"
  })
}

/**
 * The Azure source: list the container under the prefix, read blobs.
 *
 * @internal
 */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const extraCa = yield* network.caBundleOf(settings.caBundle, "azure")
    const serviceUrl = settings.access._tag === "ConnectionString"
      ? serviceOfConnectionString(Redacted.value(settings.access.connectionString))
      : settings.access.serviceUrl
    const locationOf = (key: string) => `az://${settings.container}/${key}`

    // The SDK's requests go through the library's agents (the environment's
    // proxies and CAs, keep-alive): its pipeline sets a request's agent from
    // the `agent` option before its own proxy policy would (one agent: the
    // service's URL has one scheme). Its retries are the library's.
    const clientFor = (agents: { readonly http: http.Agent; readonly https: https.Agent }): BlobServiceClientType => {
      const options = {
        retryOptions: { maxTries: 1 },
        agent: serviceUrl.startsWith("https:") ? agents.https : agents.http
      } as StoragePipelineOptions
      const access = settings.access
      if (access._tag === "ConnectionString") {
        return BlobServiceClient.fromConnectionString(Redacted.value(access.connectionString), options)
      }
      if (access.credential !== undefined) {
        return new BlobServiceClient(access.serviceUrl, newPipeline(access.credential as never, options))
      }
      if (access.accountKey !== undefined) {
        return new BlobServiceClient(
          access.serviceUrl,
          newPipeline(new StorageSharedKeyCredential(access.account, Redacted.value(access.accountKey)), options)
        )
      }
      const sas = access.sasToken === undefined ? "" : `?${Redacted.value(access.sasToken).replace(/^\?/, "")}`
      return new BlobServiceClient(`${access.serviceUrl}${sas}`, newPipeline(new AnonymousCredential(), options))
    }

    const source: snapshot.Source<ContainerClient> = {
      storageType: "azure",
      folder: "azure",
      cacheKey: [serviceUrl, settings.container, settings.prefix],
      locationOf,
      prefix: settings.prefix,
      mask: settings.mask,
      maskField: "file_mask",
      nothingListed: "no blob has this prefix",
      connect: Effect.map(
        network.agentsFor("azure", extraCa),
        (agents) => clientFor(agents).getContainerClient(settings.container)
      ),
      list: (container) =>
        Effect.tryPromise({
          try: async (signal) => {
            const blobs: Array<snapshot.Listed> = []
            const pages = container.listBlobsFlat({
              includeMetadata: true,
              abortSignal: signal,
              ...(settings.prefix === "" ? {} : { prefix: settings.prefix })
            }).byPage({ maxPageSize: settings.pageSize ?? 5000 })
            for await (const page of pages) {
              for (const blob of page.segment.blobItems) {
                // Folders of accounts with a hierarchical namespace are listed as empty blobs.
                if (blob.name.endsWith("/") || blob.metadata?.["hdi_isfolder"] === "true") continue
                const md5 = blob.properties.contentMD5
                blobs.push({
                  key: blob.name,
                  size: Number(blob.properties.contentLength ?? 0),
                  // Quoted, as the download's ETag header (and If-Match) have it.
                  etag: quoted(blob.properties.etag ?? ""),
                  checks: md5 === undefined || md5.length !== 16
                    ? []
                    : [{ algorithm: "md5", label: "md5 (Content-MD5)", expected: Buffer.from(md5).toString("hex") }]
                })
              }
            }
            return blobs
          },
          catch: fromSdk(locationOf(settings.prefix))
        }),
      get: (container, entry, range) =>
        Effect.tryPromise({
          try: (signal) =>
            container.getBlobClient(entry.key).download(
              range?.start ?? 0,
              range === undefined ? undefined : range.end - range.start,
              {
                abortSignal: signal,
                // A cut body fails the attempt; the engine's retry goes on from what it delivered.
                maxRetryRequests: 0,
                ...(entry.etag === "" ? {} : { conditions: { ifMatch: entry.etag } })
              }
            ),
          catch: fromSdk(locationOf(entry.key))
        }).pipe(
          Effect.tap((response) =>
            Effect.addFinalizer(() =>
              Effect.sync(() => (response.readableStreamBody as { destroy?: () => void } | undefined)?.destroy?.())
            )
          ),
          Effect.map((response): snapshot.Got => ({
            body: response.readableStreamBody,
            etag: response.etag,
            range: range === undefined ? undefined : transfer.parseContentRange(response.contentRange)
          }))
        )
    }
    return yield* snapshot.make(source, settings)
  })
