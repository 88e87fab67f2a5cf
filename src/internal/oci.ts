/**
 * An OCI registry (the distribution API: Docker Hub, GHCR, ECR, Harbor, the
 * CNCF distribution registry) as a source of the snapshot engine. The
 * reference is resolved to a manifest once per load (an image index: the one
 * manifest it holds, or the one of the platform asked for), then its layers
 * are the files: an artifact's layers named by their
 * `org.opencontainers.image.title` annotation (ORAS's convention), each read
 * by its digest (`/v2/<repository>/blobs/<digest>`) and checked against it.
 *
 * Auth as `docker` and `oras` do: anonymous first; on a 401, the challenge's
 * scheme: a bearer token from its realm (`service`, `scope`), asked for with
 * the credentials when there are some, or Basic with the credentials. A token
 * or a password goes to the registry's own origin only, never to a host a
 * blob is redirected to. Mirrors (containerd's `hosts.toml` model) are tried
 * in order before the registry, each blob still checked against its digest.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as crypto from "node:crypto"
import type * as http from "node:http"
import type * as https from "node:https"
import * as StorageError from "../StorageError.js"
import * as mask_ from "./mask.js"
import * as path from "node:path"
import * as network from "./network.js"
import * as snapshot from "./snapshot.js"
import * as transfer from "./transfer.js"
import * as unpacking from "./unpacking.js"
import { cap } from "./text.js"

/** A reference, read: `registry/repository:tag` or `@sha256:…`. @internal */
export interface Reference {
  /** The registry's host (and port), as written (`ghcr.io`, `127.0.0.1:5000`); Docker Hub's is `docker.io`. */
  readonly registry: string
  readonly repository: string
  /** A tag, or a digest (`sha256:…`). */
  readonly reference: string
}

const digestPattern = /^sha256:[0-9a-f]{64}$/
const tagPattern = /^[\w][\w.-]{0,127}$/
const repositoryPattern = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/

/**
 * Reads `registry/repository[:tag][@digest]` as docker does: the first part
 * is the registry when it has a `.` or a `:` or is `localhost`, else the
 * reference is Docker Hub's (`library/` before a single name); no tag means
 * `latest`; a digest wins over a tag.
 *
 * @internal
 */
export const parseReference = (text: string): Either.Either<Reference, string> => {
  const at = text.indexOf("@")
  const digest = at === -1 ? undefined : text.slice(at + 1)
  const name = at === -1 ? text : text.slice(0, at)
  if (digest !== undefined && !digestPattern.test(digest)) return Either.left(`its digest ${digest} is not sha256:<64 hex digits>`)
  const slash = name.indexOf("/")
  const first = slash === -1 ? "" : name.slice(0, slash)
  const hosted = first.includes(".") || first.includes(":") || first === "localhost"
  const registry = hosted ? first : "docker.io"
  let rest = hosted ? name.slice(slash + 1) : name
  const colon = rest.lastIndexOf(":")
  const tag = colon > rest.lastIndexOf("/") ? rest.slice(colon + 1) : undefined
  if (tag !== undefined) rest = rest.slice(0, colon)
  const repository = registry === "docker.io" && !rest.includes("/") ? `library/${rest}` : rest
  if (!repositoryPattern.test(repository)) {
    return Either.left(`its repository ${repository || "(none)"} is not a repository name (lower-case letters, digits, . _ - and /)`)
  }
  if (tag !== undefined && !tagPattern.test(tag)) return Either.left(`its tag ${tag} is not a tag (letters, digits, _ . -; at most 128)`)
  return Either.right({ registry, repository, reference: digest ?? tag ?? "latest" })
}

/** Where a reference is shown: `oci://registry/repository:tag` (or `@digest`). @internal */
export const shownOf = (ref: Reference): string =>
  `oci://${ref.registry}/${ref.repository}${digestPattern.test(ref.reference) ? "@" : ":"}${ref.reference}`

/** @internal */
export interface Settings extends snapshot.Settings {
  readonly ref: Reference
  /** `http://` instead of `https://` for the registry (as `oras --plain-http`). */
  readonly insecure: boolean
  /** Mirror endpoints (`https://mirror.local:5000`), tried in order before the registry. */
  readonly mirrors: ReadonlyArray<string>
  /** For an image index of several manifests: `os/architecture[/variant]`. */
  readonly platform: string
  readonly mask: RegExp | undefined
  /** Selects among an image's files (the storage's own mask; undefined: all). */
  readonly contentsMask: RegExp | undefined
  /** The path of an image (a modelcar) whose files are delivered (`/models`). */
  readonly pathInImage: string
  /** The limits an image's layers are unpacked under. */
  readonly unpackKwargs: unpacking.Kwargs
  readonly credentials: Credentials | undefined
  readonly caBundle: string | undefined
  readonly connectTimeout: Duration.Duration
}

/** @internal */
export interface Credentials {
  readonly username: string
  readonly password: Redacted.Redacted<string>
}

/** The media types of manifests a load asks for, index and single, OCI's and Docker's. */
const manifestTypes = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json"
}
const accept = Object.values(manifestTypes).join(", ")
const titleAnnotation = "org.opencontainers.image.title"
/** The layers of an image, read as tar (gzip and zstd told by their bytes). */
const imageLayerTypes = new Set([
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip"
])
/** The names an image's layers are fetched under (the files delivered are made from them). */
const layersFolder = ".oci-image-layers"

const Descriptor = Schema.Struct({
  mediaType: Schema.optional(Schema.String),
  digest: Schema.String,
  size: Schema.Number,
  annotations: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  platform: Schema.optional(Schema.Struct({
    os: Schema.String,
    architecture: Schema.String,
    variant: Schema.optional(Schema.String)
  }))
})
type Descriptor = typeof Descriptor.Type

const Manifest = Schema.Struct({
  mediaType: Schema.optional(Schema.String),
  artifactType: Schema.optional(Schema.String),
  manifests: Schema.optional(Schema.Array(Descriptor)),
  layers: Schema.optional(Schema.Array(Descriptor)),
  config: Schema.optional(Descriptor)
})

const TokenAnswer = Schema.Struct({ token: Schema.optional(Schema.String), access_token: Schema.optional(Schema.String) })

/** The longest manifest read (distribution's own limit is 4 MiB). */
const maxManifest = 4 * 1024 * 1024

/** @internal */
export interface Client {
  readonly agents: { readonly http: http.Agent; readonly https: https.Agent }
  /** The endpoint the manifest was read from, for the blobs (a mirror, or the registry). */
  endpoint: string
  /** The Authorization header each endpoint took, once a challenge was answered. */
  readonly authorizations: Map<string, string>
}

const basicOf = (credentials: Credentials) =>
  `Basic ${Buffer.from(`${credentials.username}:${Redacted.value(credentials.password)}`).toString("base64")}`

/** The parameters of a `WWW-Authenticate` challenge (`Bearer realm="…",service="…"`). */
const challengeOf = (header: string | undefined): { readonly scheme: string; readonly params: Record<string, string> } | undefined => {
  if (header === undefined) return undefined
  const match = /^\s*(\w+)\s*(.*)$/.exec(header)
  if (match === null) return undefined
  const params: Record<string, string> = {}
  for (const [, key, quoted, bare] of match[2]!.matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]*))/g)) params[key!.toLowerCase()] = quoted ?? bare ?? ""
  return { scheme: match[1]!.toLowerCase(), params }
}

/**
 * The registry source.
 *
 * @internal
 */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const extraCa = yield* network.caBundleOf(settings.caBundle, "oci")
    const { ref } = settings
    const timeoutMillis = Duration.toMillis(settings.connectTimeout)
    const scheme = settings.insecure ? "http" : "https"
    // Docker Hub's API is at registry-1.docker.io.
    const upstream = `${scheme}://${ref.registry === "docker.io" ? "registry-1.docker.io" : ref.registry}`
    const endpoints = [...settings.mirrors.map((mirror) => mirror.replace(/\/+$/, "")), upstream]
    const base = shownOf(ref)
    const at = (name: string) => (name === "" ? base : `${base}#${name}`)
    // A mirror is asked for the registry's repository, naming the registry (containerd's `ns`).
    const urlOf = (endpoint: string, path: string) =>
      `${endpoint}/v2/${ref.repository}/${path}${endpoint === upstream ? "" : `?ns=${encodeURIComponent(ref.registry)}`}`
    const headers = { "user-agent": "mlup-storage", "accept-encoding": "identity" }

    const failureOf = (location: string, response: http.IncomingMessage, reason?: string) =>
      network.failureOf({
        location,
        status: response.statusCode,
        reason,
        unauthorized: settings.credentials === undefined
          ? "the registry asks for credentials: give username and password, or log in (docker login / oras login writes ~/.docker/config.json)"
          : "the registry refused the credentials",
        retryAfter: transfer.retryAfterOf(response.headers["retry-after"] as string | undefined)
      })

    // A token for this repository from a bearer challenge's realm (with the credentials, if any).
    const tokenFor = (client: Client, challenge: Record<string, string>, location: string, credentials: Credentials | undefined) =>
      Effect.scoped(Effect.gen(function*() {
        const realm = challenge["realm"]
        if (realm === undefined || !URL.canParse(realm)) {
          return yield* new StorageError.RequestRejected({ location, status: 401, reason: "the registry's challenge names no token realm" })
        }
        const url = new URL(realm)
        if (challenge["service"] !== undefined) url.searchParams.set("service", challenge["service"])
        url.searchParams.set("scope", challenge["scope"] ?? `repository:${ref.repository}:pull`)
        const basic = credentials === undefined ? {} : { authorization: basicOf(credentials) }
        const answer = yield* Effect.mapError(
          network.get(client.agents, url.href, { headers: { ...headers, accept: "application/json" }, secret: basic, timeoutMillis }),
          network.fromRequestFailure(location)
        )
        if (answer.response.statusCode !== 200) {
          return yield* Effect.fail(failureOf(location, answer.response, `the token service answered HTTP ${answer.response.statusCode}`))
        }
        const text = yield* Effect.mapError(network.readText(answer.response, 64 * 1024), (error) =>
          error === "too large"
            ? new StorageError.RequestRejected({ location, status: 200, reason: "the token service's answer is too large" })
            : error)
        const decoded = Schema.decodeUnknownOption(Schema.parseJson(TokenAnswer))(text)
        const token = Option.flatMap(decoded, (answer) => Option.fromNullable(answer.token ?? answer.access_token))
        if (Option.isNone(token)) {
          return yield* new StorageError.RequestRejected({ location, status: 200, reason: "the token service's answer holds no token" })
        }
        return `Bearer ${token.value}`
      }))

    // One GET on an endpoint, answering its challenge once (the Authorization header it took is kept
    // for the load's next requests); redirects followed, the Authorization header never sent off the
    // endpoint's origin (a blob redirected to a store).
    const send = (
      client: Client,
      endpoint: string,
      url: string,
      extra: Readonly<Record<string, string>>,
      location: string
    ) =>
      Effect.gen(function*() {
        const once = (authorization: string | undefined) =>
          Effect.mapError(
            network.get(client.agents, url, {
              headers: { ...headers, ...extra },
              secret: authorization === undefined ? {} : { authorization },
              timeoutMillis
            }),
            network.fromRequestFailure(location)
          )
        const known = client.authorizations.get(endpoint)
        const first = yield* once(known)
        if (first.response.statusCode !== 401) return first
        const challenge = challengeOf(first.response.headers["www-authenticate"])
        first.response.resume()
        // The credentials are the registry's: a mirror is asked anonymously (a token without them).
        const credentials = endpoint === upstream ? settings.credentials : undefined
        let authorization: string | undefined
        if (challenge?.scheme === "bearer") authorization = yield* tokenFor(client, challenge.params, location, credentials)
        else if (challenge?.scheme === "basic" && credentials !== undefined) authorization = basicOf(credentials)
        if (authorization === undefined || authorization === known) return first
        client.authorizations.set(endpoint, authorization)
        return yield* once(authorization)
      })

    // The manifest a reference names, from the first endpoint that has it: its bytes checked against
    // the digest asked for (a tag's digest is the registry's word; a digest is checked here).
    const manifestAt = (client: Client, endpoint: string, reference: string, location: string) =>
      Effect.scoped(Effect.gen(function*() {
        const answer = yield* send(client, endpoint, urlOf(endpoint, `manifests/${reference}`), { accept }, location)
        const response = answer.response
        if (response.statusCode !== 200) {
          return yield* Effect.fail(failureOf(location, response, response.statusCode === 404 ? "no such manifest" : undefined))
        }
        const text = yield* Effect.mapError(network.readText(response, maxManifest), (error) =>
          error === "too large"
            ? new StorageError.RequestRejected({ location, status: 200, reason: `the manifest is larger than ${maxManifest} bytes` })
            : error)
        const digest = `sha256:${crypto.createHash("sha256").update(text, "utf8").digest("hex")}`
        if (digestPattern.test(reference) && digest !== reference) {
          return yield* new StorageError.ChecksumMismatch({ location, algorithm: "sha256 (the manifest's digest)", expected: reference, actual: digest })
        }
        const decoded = Schema.decodeUnknownEither(Schema.parseJson(Manifest))(text)
        if (Either.isLeft(decoded)) {
          return yield* new StorageError.RequestRejected({ location, status: 200, reason: "the answer is no OCI manifest" })
        }
        return { manifest: decoded.right, digest, mediaType: decoded.right.mediaType ?? String(response.headers["content-type"] ?? "") }
      }))

    // The manifest on the first endpoint that answers (a mirror that fails or lacks it: the next).
    const resolve = (client: Client, reference: string, location: string) =>
      Effect.gen(function*() {
        let last: StorageError.StorageError | transfer.Retryable | undefined
        for (const endpoint of endpoints) {
          const tried = yield* Effect.either(manifestAt(client, endpoint, reference, location))
          if (Either.isRight(tried)) {
            client.endpoint = endpoint
            return tried.right
          }
          last = tried.left
          if (endpoint !== upstream) {
            yield* Effect.logDebug(`The mirror ${endpoint} could not give ${cap(location)} (${cap(String(tried.left._tag))}): the next`)
          }
        }
        return yield* Effect.fail(last!)
      })

    const [os, architecture, variant] = settings.platform.split("/")
    const source: snapshot.Source<Client> = {
      storageType: "oci",
      folder: "oci",
      cacheKey: [ref.registry, ref.repository, ref.reference],
      // Blobs are named by their digest: kept once per registry, shared by its tags and repositories.
      contentStore: { store: ref.registry, keyOf: (entry) => entry.etag },
      locationOf: at,
      prefix: "",
      // An image's layers are fetched whatever the mask (it selects among the image's files).
      mask: settings.mask === undefined
        ? mask_.fromRegExp(/(?:)/)
        : mask_.shownAs(new RegExp(`^\\${layersFolder}/|(?:${settings.mask.source})`, settings.mask.flags), mask_.sourceOf(settings.mask)),
      maskField: "file_mask",
      named: false,
      nothingListed: "the artifact has no layer named by an org.opencontainers.image.title annotation",
      connect: Effect.map(network.agentsFor("oci", extraCa), (agents): Client => ({
        agents,
        endpoint: upstream,
        authorizations: new Map()
      })),
      list: (client) =>
        Effect.gen(function*() {
          let found = yield* resolve(client, ref.reference, base)
          // An index: its one manifest, or the one of the platform asked for.
          const list = found.manifest.manifests
          if (list !== undefined && found.manifest.layers === undefined) {
            // Attestations (buildx's `unknown/unknown`) are no platform's.
            const usable = list.filter((one) => one.platform?.os !== "unknown")
            const chosen = usable.length === 1
              ? usable[0]!
              : usable.find((one) =>
                one.platform?.os === os && one.platform?.architecture === architecture &&
                (variant === undefined || one.platform?.variant === variant)
              )
            if (chosen === undefined) {
              const platforms = usable.map((one) => one.platform === undefined ? "(none)" : [one.platform.os, one.platform.architecture, one.platform.variant].filter(Boolean).join("/"))
              return yield* new StorageError.RemoteNotFound({
                location: base,
                reason: `the image index has no manifest for the platform ${settings.platform} (it has ${platforms.join(", ")}): set platform`
              })
            }
            yield* Effect.logDebug(
              `${cap(base)} is an index; ${usable.length === 1 ? "its one manifest" : `the manifest for ${settings.platform}`}: ${chosen.digest}`
            )
            found = yield* resolve(client, chosen.digest, base)
          }
          const layers = found.manifest.layers ?? []
          const titled = layers.filter((layer) => layer.annotations?.[titleAnnotation] !== undefined)
          if (titled.length === 0 && layers.length > 0) {
            // An image (KServe's modelcar): its layers are fetched, and its path made of them.
            const unknownLayer = layers.find((layer) => !imageLayerTypes.has(layer.mediaType ?? ""))
            if (unknownLayer !== undefined) {
              return yield* new StorageError.RequestRejected({
                location: base,
                status: 200,
                reason: `no layer of ${found.digest} is named (${titleAnnotation}), and ${unknownLayer.digest} is no image layer ` +
                  `(${unknownLayer.mediaType ?? "no media type"}): nothing to deliver`
              })
            }
            if (settings.cache === false) {
              return yield* new StorageError.RequestRejected({
                location: base,
                status: 200,
                reason: "it is an image, whose layers are unpacked in the cache: cache: false reads artifacts only"
              })
            }
            yield* Effect.logDebug(`${cap(base)} is the image ${found.digest} (${layers.length} layers): ${settings.pathInImage} from them`)
            return layers.map((layer, i): snapshot.Listed => ({
              ...listedOf({ ...layer, annotations: { [titleAnnotation]: layerName(i, layer.digest) } })
            }))
          }
          const unknown = titled.find((layer) => {
            const [algorithm = "", hex = ""] = layer.digest.split(":")
            return algorithms[algorithm]?.test(hex) !== true
          })
          if (unknown !== undefined) {
            return yield* new StorageError.RequestRejected({
              location: at(unknown.annotations![titleAnnotation]!),
              status: 200,
              reason: `its digest ${unknown.digest} is neither sha256 nor sha512: it could not be checked`
            })
          }
          yield* Effect.logDebug(`${cap(base)} is ${found.digest} (${titled.length} named layers)`)
          return titled.map((layer): snapshot.Listed => listedOf(layer))
        }),
      get: (client, entry, range) =>
        Effect.gen(function*() {
          const location = at(entry.name)
          const digest = entry.etag
          const extra = range === undefined ? {} : { range: `bytes=${range.start}-${range.end - 1}` }
          // The endpoint the manifest came from; a mirror that fails a blob is left for the next endpoint.
          const from = endpoints.indexOf(client.endpoint)
          let last: StorageError.StorageError | transfer.Retryable | undefined
          for (const endpoint of endpoints.slice(Math.max(0, from))) {
            const tried = yield* Effect.either(Effect.gen(function*() {
              const answer = yield* send(client, endpoint, urlOf(endpoint, `blobs/${digest}`), extra, location)
              const status = answer.response.statusCode ?? 0
              if (status !== 200 && status !== 206) return yield* Effect.fail(failureOf(location, answer.response))
              const served = range === undefined ? undefined : transfer.parseContentRange(answer.response.headers["content-range"])
              if (range !== undefined && status !== 206) {
                answer.response.resume()
                return yield* new StorageError.RequestRejected({
                  location,
                  status,
                  reason: "the registry did not answer the byte range asked for: set multipart_threshold_mb above the blob's size"
                })
              }
              // A blob is its digest: no ETag to compare; its bytes are checked against the digest.
              return { body: answer.response, etag: undefined, range: served } satisfies snapshot.Got
            }))
            if (Either.isRight(tried)) return tried.right
            last = tried.left
            if (endpoint === upstream || tried.left._tag === "Retryable") break
            client.endpoint = endpoints[endpoints.indexOf(endpoint) + 1]!
          }
          return yield* Effect.fail(last!)
        })
    }
    const work = yield* snapshot.make(source, settings)
    const within = settings.pathInImage.replace(/^\/+|\/+$/g, "")
    const layerUnpacker = unpacking.makeUnpacker({
      kwargs: { ...settings.unpackKwargs, unpack: "tar" },
      cacheDir: settings.cacheDir,
      verify: settings.verify
    })
    return {
      ...work,
      compose: composeImage({ unpacker: layerUnpacker, within, base, mask: settings.contentsMask })
    }
  })

/** The name an image's layer is fetched under: its place, then its digest. */
const layerName = (i: number, digest: string) => `${layersFolder}/${String(i).padStart(4, "0")}-${digest.replace(":", "-")}`

/**
 * An image's path made of its layers, lowest first: each layer's files under
 * the path (unpacked under the rules of unpacking, as a tree of their own per
 * layer, kept by the layer's digest) replace those below; its whiteouts
 * (`.wh.<name>`, `.wh..wh..opq`) remove what the layers below had there.
 *
 * @internal
 */
export const composeImage = (options: {
  readonly unpacker: unpacking.Unpacker
  readonly within: string
  readonly base: string
  readonly mask: RegExp | undefined
}) =>
(files: ReadonlyArray<unpacking.Delivered>): Effect.Effect<ReadonlyArray<unpacking.Delivered>, StorageError.StorageError> =>
  Effect.gen(function*() {
    const layers = files.filter((file) => file.name.startsWith(`${layersFolder}/`))
    if (layers.length === 0) return files
    const { within } = options
    const composed = new Map<string, unpacking.Delivered>()
    const removeUnder = (name: string) => {
      for (const key of [...composed.keys()]) if (name === "" || key === name || key.startsWith(`${name}/`)) composed.delete(key)
    }
    // A path of the layer, relative to the image's path ("" for the path itself); undefined: above it.
    const relative = (name: string) => (name === within ? "" : name.startsWith(`${within}/`) ? name.slice(within.length + 1) : undefined)
    for (const layer of [...layers].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const tree = yield* options.unpacker.treeFor(layer, "tar", within)
      const names = tree.record.files.map((file) => file.name)
      // Whiteouts first: they remove what the layers below had.
      for (const name of names) {
        const slash = name.lastIndexOf("/")
        const dir = slash === -1 ? "" : name.slice(0, slash)
        const base = name.slice(slash + 1)
        if (!base.startsWith(".wh.")) continue
        const target = base === ".wh..wh..opq" ? dir : `${dir === "" ? "" : `${dir}/`}${base.slice(".wh.".length)}`
        const inside = relative(target)
        // A whiteout of the path or of a folder above it removes all; one inside, what is under its name.
        removeUnder(inside === undefined ? "" : inside)
      }
      for (const file of tree.record.files) {
        const inside = relative(file.name)
        if (inside === undefined || inside === "" || inside.split("/").at(-1)!.startsWith(".wh.")) continue
        // A file replaces a folder of that name below, and is no longer under a file it replaced.
        removeUnder(inside)
        for (let at = inside.lastIndexOf("/"); at > 0; at = inside.lastIndexOf("/", at - 1)) composed.delete(inside.slice(0, at))
        composed.set(inside, {
          file: path.join(tree.folder, ...file.name.split("/")),
          name: inside,
          size: file.size,
          location: `${options.base}#/${within}/${inside}`
        })
      }
    }
    const names = [...composed.keys()].sort()
    if (names.length === 0) {
      return yield* new StorageError.RemoteNotFound({ location: options.base, reason: `the image has no file under /${within}` })
    }
    const chosen = options.mask === undefined
      ? names
      : yield* mask_.select(options.mask, names, { storageType: "oci", field: "file_mask" })
    if (chosen.length === 0) {
      return yield* new StorageError.NothingMatched({
        folder: `${options.base}#/${within}`,
        mask: mask_.sourceOf(options.mask!),
        names: names.slice(0, 10),
        entries: names.length
      })
    }
    return [...files.filter((file) => !file.name.startsWith(`${layersFolder}/`)), ...chosen.map((name) => composed.get(name)!)]
  })

/** A named layer as the engine lists it: its title, size and digest (each blob is checked against it). */
const listedOf = (layer: Descriptor): snapshot.Listed => {
  const [algorithm = "", hex = ""] = layer.digest.split(":")
  return {
    key: layer.annotations![titleAnnotation]!,
    name: layer.annotations![titleAnnotation]!,
    size: layer.size,
    etag: layer.digest,
    checks: [{ algorithm, label: `${algorithm} (the blob's digest)`, expected: hex }]
  }
}

/** The digest algorithms a blob may be named by (OCI's registered ones). */
const algorithms: Record<string, RegExp> = { sha256: /^[0-9a-f]{64}$/, sha512: /^[0-9a-f]{128}$/ }
