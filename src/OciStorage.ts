/**
 * An OCI registry: a model pushed as an OCI artifact (`oras push`, Docker
 * Model Runner's artifacts), read from any registry that speaks the
 * distribution API (Docker Hub, GHCR, ECR, Harbor, Artifactory, the CNCF
 * distribution registry), through the library's cache by path or as bytes.
 *
 * - The reference (`registry/repository:tag` or `@sha256:…`) is resolved to a
 *   manifest once per load; an image index gives its one manifest, or the
 *   one of `platform`. Each layer named by an `org.opencontainers.image.title`
 *   annotation is a file of that name (ORAS's convention); the mask selects
 *   among them.
 * - Every blob is read by its digest and checked against it before it is
 *   delivered: a cached blob can never lie. A manifest named by digest is
 *   checked too.
 * - Auth as docker and oras: anonymous, a bearer token from the registry's
 *   challenge (asked for with the credentials when there are some), or Basic;
 *   credentials from `username`/`password` or the Docker config file
 *   (`~/.docker/config.json`, `$DOCKER_CONFIG`). A token or a password goes
 *   to the registry's own origin only, never to a storage a blob is
 *   redirected to.
 * - `mirrors`: endpoints tried in order before the registry (containerd's
 *   `hosts.toml` model: Spegel, Dragonfly, Harbor's proxy cache, a
 *   pull-through distribution registry), each blob still checked.
 * - The engine of the other remote storages: staged whole and published at
 *   once, large blobs as parallel ranged reads that resume, one load at a
 *   time per reference across processes, offline mode from the last snapshot,
 *   `unpack` for archives among the files.
 *
 * URI: `oci://registry/repository:tag` or `oci://registry/repository@sha256:…`.
 *
 * @since 0.5.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as nodeFs from "node:fs"
import * as os from "node:os"
import * as declare_ from "./internal/declare.js"
import * as oci from "./internal/oci.js"
import * as options_ from "./internal/options.js"
import { BooleanFlag, Seconds, Secret } from "./internal/options.js"
import * as read_ from "./internal/read.js"
import * as snapshot from "./internal/snapshot.js"
import type * as internal from "./internal/storage.js"
import * as StorageError from "./StorageError.js"
import * as unpacking from "./internal/unpacking.js"

/**
 * @since 0.5.0
 * @category constants
 */
export const storageType = "oci"

/** A reference, checked as docker reads one. */
const Reference = Schema.String.pipe(
  Schema.filter((value) => Either.match(oci.parseReference(value), { onLeft: (problem) => problem, onRight: () => true }))
)

const Endpoint = Schema.String.pipe(
  Schema.filter((value) => (/^https?:\/\/[^/]+\/?$/.test(value) && URL.canParse(value)) || "must be an http(s) URL of a registry mirror (no path)")
)

/**
 * `storage_kwargs` of the OCI storage. Unknown keys are rejected.
 *
 * - `reference` (required; `storage_uri: oci://…` gives it):
 *   `registry/repository:tag` or `registry/repository@sha256:…`; no
 *   registry: Docker Hub (`library/` before a single name); no tag: `latest`.
 * - `path_in_image` (`/models`, as KServe's modelcar): for an image, the
 *   folder whose files are delivered, made of its layers in order (each
 *   unpacked under the rules of `unpack`, its whiteouts applied).
 * - `platform` (this machine's: `linux/amd64`, `linux/arm64`): the manifest
 *   taken from an image index of several.
 * - `file_mask`: selects among the named layers (default: all of them).
 * - `username`, `password` (secrets): Basic credentials, also sent to the
 *   token service of a bearer challenge. Both or neither. Without them, the
 *   Docker config file's entry for the registry (`auths`), if any.
 * - `docker_config`: the Docker config file (default
 *   `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
 * - `insecure` (false): `http://` to the registry (as `oras --plain-http`).
 * - `mirrors`: a URL or a list, tried in order before the registry.
 * - `connect_timeout` (30 s) and the options every remote storage shares
 *   (the cache, parts, retries, `unpack`, …).
 *
 * @since 0.5.0
 * @category schemas
 */
export const Kwargs = Schema.Struct({
  reference: Reference.annotations({ missingMessage: () => "is missing: give registry/repository:tag (or storage_uri: oci://…)" }),
  path_in_image: Schema.optionalWith(
    Schema.String.pipe(Schema.filter((value) => {
      const inside = value.replace(/^\/+|\/+$/g, "")
      return (inside !== "" && options_.keyProblem(inside) === undefined) || "must be a folder of the image, as /models"
    })),
    { default: () => "/models" }
  ),
  platform: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/, { message: () => "must be os/architecture[/variant]" })),
    { exact: true }
  ),
  file_mask: Schema.optionalWith(options_.Mask, { exact: true }),
  username: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  password: Schema.optionalWith(Secret, { exact: true }),
  docker_config: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  insecure: Schema.optionalWith(BooleanFlag, { default: () => false }),
  mirrors: Schema.optionalWith(Schema.Union(Endpoint, Schema.Array(Endpoint)), { default: () => [] }),
  connect_timeout: Seconds(30),
  ...options_.transferFields
})

/**
 * @since 0.5.0
 * @category models
 */
export type Kwargs = typeof Kwargs.Type

/**
 * What only code can give: the retry policy.
 *
 * @since 0.5.0
 * @category models
 */
export interface Extra extends declare_.WithRetrySchedule {}

/**
 * Options in code: the kwargs in camelCase, durations as Durations.
 *
 * @since 0.5.0
 * @category models
 */
export type Options = declare_.OptionsOf<typeof Kwargs.Encoded> & Extra

const issue = (field: string, problem: string) => new StorageError.OptionIssue({ field, problem })

/** This machine's platform, as OCI names it. */
const hostPlatform = (): string => {
  const architecture = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x" }[process.arch as string]
  return `linux/${architecture ?? process.arch}`
}

/** Docker config's names for a registry: its host, with a scheme, and Docker Hub's legacy index. */
const configKeys = (registry: string) =>
  registry === "docker.io"
    ? ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
    : [registry, `https://${registry}`, `http://${registry}`]

const DockerConfig = Schema.Struct({
  auths: Schema.optional(Schema.Record({
    key: Schema.String,
    value: Schema.Struct({
      auth: Schema.optional(Schema.String),
      username: Schema.optional(Schema.String),
      password: Schema.optional(Schema.String),
      identitytoken: Schema.optional(Schema.String)
    })
  })),
  credsStore: Schema.optional(Schema.String),
  credHelpers: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String }))
})

/** The credentials the Docker config file holds for a registry (none: the file, or the entry, is absent). */
const fromDockerConfig = (file: string, registry: string) =>
  Effect.gen(function*() {
    let text: string
    try {
      text = nodeFs.readFileSync(file, "utf8")
    } catch {
      return undefined
    }
    const config = Schema.decodeUnknownOption(Schema.parseJson(DockerConfig))(text)
    if (Option.isNone(config)) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType,
        issues: [issue("docker_config", `${file} is not a Docker config file (JSON with "auths")`)]
      })
    }
    const entry = configKeys(registry).map((key) => config.value.auths?.[key]).find((one) => one !== undefined)
    if (entry === undefined) {
      if (config.value.credHelpers?.[registry] !== undefined || config.value.credsStore !== undefined) {
        yield* Effect.logWarning(
          `${file} keeps ${registry}'s credentials in a credential helper, which is not read yet: give username and password`
        )
      }
      return undefined
    }
    if (entry.auth !== undefined) {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8")
      const colon = decoded.indexOf(":")
      if (colon > 0) return { username: decoded.slice(0, colon), password: Redacted.make(decoded.slice(colon + 1)) }
    }
    if (entry.username !== undefined && entry.password !== undefined) {
      return { username: entry.username, password: Redacted.make(entry.password) }
    }
    if (entry.identitytoken !== undefined) {
      yield* Effect.logWarning(`${file} holds an identity token for ${registry}, which is not used yet: give username and password`)
    }
    return undefined
  })

/**
 * An OCI storage from decoded kwargs (and, from code, a retry Schedule).
 *
 * @since 0.5.0
 * @category constructors
 */
export const makeResolved = (
  kwargs: Kwargs,
  retrySchedule?: Schedule.Schedule<unknown, unknown>
): Effect.Effect<internal.Service, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const problems = options_.deliveryConflicts(kwargs)
    if ((kwargs.username === undefined) !== (kwargs.password === undefined)) {
      problems.push(issue(kwargs.username === undefined ? "username" : "password", "is missing: give both username and password, or neither"))
    }
    if (problems.length > 0) return yield* new StorageError.InvalidStorageOptions({ storageType, issues: problems })
    const ref = Either.getOrThrow(oci.parseReference(kwargs.reference))
    const dockerConfig = kwargs.docker_config ??
      Option.match(yield* options_.envString("DOCKER_CONFIG"), {
        onNone: () => `${os.homedir()}/.docker/config.json`,
        onSome: (dir) => `${dir}/config.json`
      })
    const credentials: oci.Credentials | undefined = kwargs.username !== undefined && kwargs.password !== undefined
      ? { username: kwargs.username, password: kwargs.password }
      : yield* fromDockerConfig(dockerConfig, ref.registry)
    const settings: oci.Settings = {
      ref,
      insecure: kwargs.insecure,
      mirrors: typeof kwargs.mirrors === "string" ? [kwargs.mirrors] : kwargs.mirrors,
      platform: kwargs.platform ?? hostPlatform(),
      // With unpacking on, the archives too (the mask selects among their files).
      mask: kwargs.file_mask === undefined ? undefined : unpacking.sourceMask(kwargs.unpack, kwargs.file_mask),
      contentsMask: kwargs.file_mask,
      pathInImage: kwargs.path_in_image,
      unpackKwargs: kwargs,
      credentials,
      caBundle: kwargs.ca_bundle,
      connectTimeout: Duration.seconds(kwargs.connect_timeout),
      ...(yield* snapshot.settingsOf(kwargs, retrySchedule))
    }
    return yield* read_.remoteStorage(storageType, kwargs, yield* oci.make(settings), {
      mask: kwargs.file_mask,
      maskField: "file_mask"
    })
  })

/**
 * The OCI storage, from one declaration: `make` (bad options:
 * `InvalidStorageOptions`), `layer` (the application's `FileSystem` and
 * `Path`; `NodeStorage.layerOci` provides Node's; requests use node:http),
 * `layerConfig` (options as `Config`s) and `definition` (for a `Selection`).
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * import * as Option from "effect/Option"
 * OciStorage.layerConfig({
 *   reference: Config.string("MODEL_REFERENCE"),
 *   username: Config.option(Config.string("REGISTRY_USER")).pipe(Config.map(Option.getOrUndefined)),
 *   password: Config.option(Config.redacted("REGISTRY_PASSWORD")).pipe(Config.map(Option.getOrUndefined))
 * })
 * ```
 *
 * @since 0.5.0
 * @category constructors
 */
export const { definition, layer, layerConfig, make }: declare_.Declared<Options, Kwargs> = declare_.declare(storageType, {
  aliases: ["OciStorage", "oras", "registry"],
  kwargs: Kwargs,
  extras: ["retrySchedule"],
  build: (kwargs, extra: Extra) => makeResolved(kwargs, extra.retrySchedule)
})
