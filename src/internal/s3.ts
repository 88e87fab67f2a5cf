import type { GetObjectCommandOutput, S3ClientConfig } from "@aws-sdk/client-s3"
import { S3Client } from "@aws-sdk/client-s3"
import { makeS3Service, S3ClientInstance } from "@effect-aws/client-s3"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as nodeFs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import * as StorageError from "../StorageError.js"
import * as network from "./network.js"
import * as options_ from "./options.js"
import * as snapshot from "./snapshot.js"
import * as transfer from "./transfer.js"
import type * as S3Storage from "../S3Storage.js"

/** @internal */
export interface Settings extends snapshot.Settings {
  /** `s3`, or `gcs` (Google Cloud Storage's XML API: its endpoint, no AWS chain, no AWS checksums). */
  readonly storageType: "s3" | "gcs"
  readonly bucket: string
  readonly prefix: string
  readonly mask: RegExp
  readonly endpoint: string | undefined
  readonly region: string | undefined
  readonly pathStyle: boolean | undefined
  /** The caller's own client (credential providers, handlers, retries): used as it is, never destroyed. */
  /** The application's own client (an `S3Client`, declared by its shape in the public module). */
  readonly client: S3Storage.S3Client | undefined
  readonly caBundle: string | undefined
  readonly credentials:
    | {
      readonly accessKeyId: Redacted.Redacted<string>
      readonly secretAccessKey: Redacted.Redacted<string>
      readonly sessionToken: Redacted.Redacted<string> | undefined
    }
    | undefined
}

/** The effect-aws service over one client. */
type S3Service = Effect.Effect.Success<typeof makeS3Service>

/** @internal */
export type Delivered = snapshot.Delivered

/** An S3 client's failure as the library's error: by HTTP status, as S3-compatible stores agree on little else. */
const fromSdk = (location: string, storageType: Settings["storageType"]) => (error: unknown): StorageError.StorageError | transfer.Retryable => {
  const status = Predicate.hasProperty(error, "$metadata") && Predicate.hasProperty(error.$metadata, "httpStatusCode")
    ? Number(error.$metadata.httpStatusCode)
    : undefined
  const code = Predicate.hasProperty(error, "Code") && typeof error.Code === "string"
    ? error.Code
    : Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" && error._tag !== "SdkError"
    ? error._tag
    : undefined
  const message = Predicate.hasProperty(error, "message") ? String(error.message) : String(error)
  const reason = code === undefined ? message : `${code}: ${message}`
  // No credentials anywhere in the SDK's chain: no request was sent, and a retry finds none either.
  const name = Predicate.hasProperty(error, "name") ? String(error.name) : ""
  if (name === "CredentialsProviderError" || /Could not load credentials/i.test(message)) {
    return new StorageError.Unauthorized({
      location,
      reason: "no credentials: give access_key_id and secret_access_key, or set AWS_ACCESS_KEY_ID / " +
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role (web identity, container or instance)"
    })
  }
  return network.failureOf({
    location,
    status,
    reason,
    cause: error,
    notFound: code === "NoSuchBucket" || code === "NoSuchKey",
    unauthorized: storageType === "gcs"
      ? `${reason} (Google Cloud Storage's XML API takes HMAC keys: give access_key_id and secret_access_key, ` +
        "or set GCS_ACCESS_KEY_ID and GCS_SECRET_ACCESS_KEY; without them requests are anonymous, for public buckets)"
      : reason
  })
}

/**
 * The digests of the whole object a GET's answer vouches for. The object's
 * own checksums first (`x-amz-checksum-sha256`, `-sha1`, of the full object:
 * a composite one, of the parts of a multipart upload, ends in `-N` and is not
 * a digest of the bytes); else the ETag, which AWS documents as the MD5 of the
 * object only for a single-part upload stored plainly or with SSE-S3: not
 * with SSE-KMS (`aws:kms`, `aws:kms:dsse`) nor SSE-C, whose ETags are no
 * digest of the bytes.
 *
 * @internal
 */
export const vouchedBy = (
  output: {
    readonly ETag?: string | undefined
    readonly ServerSideEncryption?: string | undefined
    readonly SSECustomerAlgorithm?: string | undefined
    readonly ChecksumSHA256?: string | undefined
    readonly ChecksumSHA1?: string | undefined
    readonly ChecksumType?: string | undefined
  },
  /** The answer holds the whole object (a ranged answer's checksums, if any, are not the object's). */
  whole: boolean
): ReadonlyArray<snapshot.Check> => {
  const own = !whole || output.ChecksumType === "COMPOSITE" ? [] : [
    ["sha256", output.ChecksumSHA256] as const,
    ["sha1", output.ChecksumSHA1] as const
  ].flatMap(([algorithm, value]) =>
    value === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(value)
      ? []
      : [{ algorithm, label: `${algorithm} (x-amz-checksum-${algorithm})`, expected: Buffer.from(value, "base64").toString("hex") }]
  )
  if (own.length > 0) return own
  const etag = output.ETag ?? ""
  const encrypted = output.ServerSideEncryption === "aws:kms" || output.ServerSideEncryption === "aws:kms:dsse" ||
    output.SSECustomerAlgorithm !== undefined
  return !encrypted && /^"?[0-9a-f]{32}"?$/.test(etag)
    ? [{ algorithm: "md5", label: "md5 (ETag)", expected: etag.replace(/"/g, "") }]
    : []
}

/** The keys of one profile of the AWS config file (`AWS_CONFIG_FILE`, else `~/.aws/config`). */
const profileOf = (file: string, profile: string): Record<string, string> => {
  let text: string
  try {
    text = nodeFs.readFileSync(file, "utf8")
  } catch {
    return {}
  }
  const wanted = profile === "default" ? ["default", "profile default"] : [`profile ${profile}`]
  const keys: Record<string, string> = {}
  let inside = false
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/[#;].*$/, "").trim()
    const section = /^\[\s*(.+?)\s*\]$/.exec(line)
    if (section !== null) {
      inside = wanted.includes(section[1]!)
      continue
    }
    // Top-level keys only (not the nested "s3 =" blocks, which start indented).
    const pair = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(line)
    if (inside && pair !== null && !/^\s/.test(raw)) keys[pair[1]!.toLowerCase()] = pair[2]!
  }
  return keys
}

/**
 * Where the client goes, as the AWS CLI and KServe decide it: the endpoint
 * from the kwargs, else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or the
 * profile's `endpoint_url` (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`); a
 * custom endpoint means path-style addressing. The region from the kwargs,
 * else `AWS_REGION`, the profile's `region`, `AWS_DEFAULT_REGION`, else
 * `us-east-1` for a custom endpoint; none at all is an invalid option.
 *
 * @internal
 */
export const resolveEndpointAndRegion = (settings: Pick<Settings, "endpoint" | "region" | "pathStyle">) =>
  Effect.gen(function*() {
    const env = options_.envString
    const configFile = Option.getOrElse(yield* env("AWS_CONFIG_FILE"), () => nodePath.join(os.homedir(), ".aws", "config"))
    const profile = profileOf(configFile, Option.getOrElse(yield* env("AWS_PROFILE"), () => "default"))
    const ignoreConfigured = Option.getOrElse(yield* env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"), () => "") === "true"
    const configured = ignoreConfigured ? Option.none<string>() : Option.orElse(
      yield* env("AWS_ENDPOINT_URL_S3"),
      () => Option.orElse(Option.fromNullable(profile["endpoint_url"]), () => Option.none<string>())
    ).pipe((first) => first)
    const endpoint = settings.endpoint ??
      Option.getOrUndefined(configured) ??
      (ignoreConfigured ? undefined : Option.getOrUndefined(yield* env("AWS_ENDPOINT_URL")))
    const region = settings.region ??
      Option.getOrUndefined(yield* env("AWS_REGION")) ??
      profile["region"] ??
      Option.getOrUndefined(yield* env("AWS_DEFAULT_REGION")) ??
      (endpoint !== undefined ? "us-east-1" : undefined)
    if (region === undefined) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType: "s3",
        issues: [
          new StorageError.OptionIssue({
            field: "region",
            problem: "is not set: give region, or set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
          })
        ]
      })
    }
    return { endpoint, region, pathStyle: settings.pathStyle ?? endpoint !== undefined }
  })

/**
 * Google Cloud Storage's S3-compatible XML API: its endpoint (GcsStorage
 * gives it; never the AWS_ENDPOINT_URL* variables nor an AWS profile, which
 * name AWS or another store), the region `auto` (GCS ignores it, SigV4 needs
 * one) and path-style addressing (bucket names with dots break
 * virtual-hosted TLS).
 *
 * @internal
 */
export const resolveGcs = (settings: Pick<Settings, "endpoint" | "region" | "pathStyle">) => ({
  endpoint: settings.endpoint,
  region: settings.region ?? "auto",
  pathStyle: settings.pathStyle ?? true
})

/**
 * The S3 storage's work: list, select, fetch into a staged snapshot, publish.
 *
 * @internal
 */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    // The caller's own client knows its endpoint and region (the cache is keyed by what the kwargs say).
    const resolved = settings.client !== undefined
      ? { endpoint: settings.endpoint, region: settings.region ?? "(the client's)", pathStyle: settings.pathStyle ?? false }
      : settings.storageType === "gcs"
      ? resolveGcs(settings)
      : yield* resolveEndpointAndRegion(settings)
    const extraCa = yield* network.caBundleOf(settings.caBundle, settings.storageType)
    // The SDK warns, on every client made under Node 20, that its releases of
    // 2027 will need Node 22. This library supports Node 20 (with the SDK
    // versions that do): the warning is noise to its users, not a fault.
    process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] ??= "true"

    // A client for one load: the caller's (never destroyed here), or one made
    // on agents with the environment's proxies and CAs, destroyed (with its
    // sockets) when the load's scope closes.
    const clientForLoad = Effect.gen(function*() {
      if (settings.client !== undefined) {
        return yield* Effect.provideService(makeS3Service, S3ClientInstance.S3ClientInstance, settings.client as S3Client)
      }
      const agents = yield* network.agentsFor(settings.storageType, extraCa)
      const gcs = settings.storageType === "gcs"
      const config: S3ClientConfig = {
        region: resolved.region,
        forcePathStyle: resolved.pathStyle,
        // A bucket in another region than the one configured answers with a redirect: followed.
        followRegionRedirects: true,
        // Retries are the storage's own (one policy, logged, replaceable).
        maxAttempts: 1,
        requestHandler: { httpAgent: agents.http, httpsAgent: agents.https },
        ...(resolved.endpoint === undefined ? {} : { endpoint: resolved.endpoint }),
        // The SDK's own check of a GET's checksum is off: the engine checks what an answer
        // vouches for (see vouchedBy), so that a mismatch is a ChecksumMismatch, as for every source.
        responseChecksumValidation: "WHEN_REQUIRED",
        ...(gcs
          ? {
            // GCS neither asks for nor checks the SDK's CRC32 checksums (and refuses some requests that carry them).
            requestChecksumCalculation: "WHEN_REQUIRED"
          }
          : {}),
        // Without HMAC keys, GCS requests go unsigned (public buckets), never with AWS's credentials.
        ...(gcs && settings.credentials === undefined
          ? { credentials: { accessKeyId: "", secretAccessKey: "" }, signer: { sign: (request) => Promise.resolve(request) } }
          : {}),
        ...(settings.credentials === undefined ? {} : {
          credentials: {
            accessKeyId: Redacted.value(settings.credentials.accessKeyId),
            secretAccessKey: Redacted.value(settings.credentials.secretAccessKey),
            ...(settings.credentials.sessionToken === undefined
              ? {}
              : { sessionToken: Redacted.value(settings.credentials.sessionToken) })
          }
        })
      }
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new S3Client(config)),
        (client) => Effect.sync(() => client.destroy())
      )
      if (!gcs) {
        // S3 sends an object's own checksums (x-amz-checksum-*) only when asked: asked for whole-object GETs.
        client.middlewareStack.add(
          (next, context) => (args) => {
            const request = args.request as { headers?: Record<string, string> }
            if (context.commandName === "GetObjectCommand" && (args.input as { Range?: string }).Range === undefined) {
              if (request.headers !== undefined) request.headers["x-amz-checksum-mode"] = "ENABLED"
            }
            return next(args)
          },
          { step: "build", name: "mlupStorageChecksumMode" }
        )
      }
      return yield* Effect.provideService(makeS3Service, S3ClientInstance.S3ClientInstance, client)
    })
    const scheme = settings.storageType === "gcs" ? "gs" : "s3"
    const locationOf = (key: string) => `${scheme}://${settings.bucket}/${key}`

    const source: snapshot.Source<S3Service> = {
      storageType: settings.storageType,
      folder: "s3",
      cacheKey: [resolved.endpoint ?? "aws", resolved.region, settings.bucket, settings.prefix],
      locationOf,
      prefix: settings.prefix,
      mask: settings.mask,
      maskField: "file_mask",
      nothingListed: "no object has this prefix",
      connect: clientForLoad,
      // Every key under the prefix, page by page (1,000 keys a page).
      list: (s3) =>
        Effect.gen(function*() {
          const objects: Array<snapshot.Listed> = []
          let token: string | undefined
          do {
            const page = yield* Effect.mapError(
              s3.listObjectsV2({
                Bucket: settings.bucket,
                ...(settings.prefix === "" ? {} : { Prefix: settings.prefix }),
                ...(token === undefined ? {} : { ContinuationToken: token })
              }),
              fromSdk(locationOf(settings.prefix), settings.storageType)
            )
            for (const object of page.Contents ?? []) {
              if (object.Key !== undefined && !object.Key.endsWith("/")) {
                // What the object's ETag means (an MD5 or not) only its GET says: see vouchedBy.
                objects.push({ key: object.Key, size: Number(object.Size ?? 0), etag: object.ETag ?? "" })
              }
            }
            token = page.IsTruncated ? page.NextContinuationToken : undefined
          } while (token !== undefined)
          return objects
        }),
      get: (s3, entry, range) =>
        Effect.map(
          Effect.mapError(
            s3.getObject({
              Bucket: settings.bucket,
              Key: entry.key,
              IfMatch: entry.etag,
              ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end - 1}` })
            }),
            fromSdk(locationOf(entry.key), settings.storageType)
          ),
          (output: GetObjectCommandOutput): snapshot.Got => ({
            body: output.Body,
            etag: output.ETag,
            range: transfer.parseContentRange(output.ContentRange),
            checks: vouchedBy(output, range === undefined)
          })
        )
    }
    return yield* snapshot.make(source, settings)
  })
