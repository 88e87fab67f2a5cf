/**
 * The Hugging Face Hub as a source of the snapshot engine: one answer of the
 * Hub's API resolves the revision to a commit and lists the files of that
 * commit (sizes, git blob ids, LFS sha256); every file is then read from
 * that commit (`resolve/<commit>/<path>`), so that a push during a load
 * cannot mix two versions.
 *
 * @internal
 */
import * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as http from "node:http"
import type * as https from "node:https"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as mask_ from "./mask.js"
import * as network from "./network.js"
import * as snapshot from "./snapshot.js"
import * as transfer from "./transfer.js"
import { cap } from "./text.js"

/** @internal */
export type RepoType = "model" | "dataset" | "space"

/** @internal */
export interface Settings extends snapshot.Settings {
  /** The Hub, without a trailing slash (`https://huggingface.co`). */
  readonly endpoint: string
  readonly repoId: string
  readonly repoType: RepoType
  readonly revision: string
  /** A file or a folder of the repository; "" for all of it. */
  readonly pathInRepo: string
  readonly allowPatterns: ReadonlyArray<string> | undefined
  readonly ignorePatterns: ReadonlyArray<string> | undefined
  /** mlup's mask, searched in each name below `pathInRepo`; none: every file. */
  readonly mask: RegExp | undefined
  readonly token: Redacted.Redacted<string> | undefined
  readonly caBundle: string | undefined
  readonly connectTimeout: Duration.Duration
}

/** What the Hub's API says of a revision (`/api/models/<repo>/revision/<rev>`), as far as it is used: its commit. */
const RevisionInfo = Schema.Struct({ sha: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{40}$/)) })

/** One page of a commit's tree (`/api/models/<repo>/tree/<commit>?recursive=true`), as huggingface_hub reads it. */
const TreePage = Schema.Array(Schema.Struct({
  type: Schema.String,
  path: Schema.String,
  size: Schema.optional(Schema.Number),
  oid: Schema.optional(Schema.String),
  lfs: Schema.optional(Schema.Struct({ oid: Schema.String, size: Schema.Number }))
}))

/** A commit's files, as the cache keeps them (a commit never changes: its tree is asked for once). */
interface Tree {
  readonly commit: string
  readonly files: ReadonlyArray<{
    readonly path: string
    readonly size: number
    readonly blobId?: string | undefined
    readonly lfsSha256?: string | undefined
  }>
}

/** The largest API answer read (a listing of a very large repository is a few MiB). */
const maxListing = 64 * 1024 * 1024

/**
 * A glob as Python's `fnmatch` reads it (huggingface_hub's
 * `allow_patterns` / `ignore_patterns`): `*` any run of characters, `/`
 * included; `?` one; `[seq]`, `[!seq]`; the whole path must match. A pattern
 * that ends with `/` stands for everything under that folder.
 *
 * @internal
 */
export const globToRegExp = (glob: string): RegExp => {
  const pattern = glob.endsWith("/") ? `${glob}*` : glob
  let out = ""
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!
    if (c === "*") out += ".*"
    else if (c === "?") out += "."
    else if (c === "[") {
      // As fnmatch: a "]" right after "[" or "[!" belongs to the set; no closing "]" is a literal "[".
      let j = i + 1
      if (pattern[j] === "!") j++
      if (pattern[j] === "]") j++
      const close = pattern.indexOf("]", j)
      if (close === -1) {
        out += "\\["
        continue
      }
      const body = pattern.slice(i + 1, close).replace(/[\\\]^]/g, "\\$&")
      out += body.startsWith("!") ? `[^${body.slice(1)}]` : `[${body}]`
      i = close
    } else out += c.replace(/[.+^${}()|\\/\]]/g, "\\$&")
  }
  return new RegExp(`^(?:${out})$`, "s")
}

const typeSegment = (repoType: RepoType) => (repoType === "model" ? "" : `${repoType}s/`)
const encodePath = (file: string) => file.split("/").map(encodeURIComponent).join("/")

/**
 * Where a repository is, in messages: `hf://org/name@revision/path`
 * (`hf://datasets/org/name…` for a dataset).
 *
 * @internal
 */
export const locationOf = (settings: Pick<Settings, "repoId" | "repoType" | "revision">, file: string) =>
  `hf://${typeSegment(settings.repoType)}${settings.repoId}@${settings.revision}${file === "" ? "" : `/${file}`}`

/**
 * A Hub answer that is not the file or listing asked for, as the library's
 * error: by the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound,
 * EntryNotFound, GatedRepo) where it gives one, else by status.
 *
 * @internal
 */
export const failureOf = (
  settings: Pick<Settings, "repoId" | "repoType" | "revision" | "token" | "endpoint">,
  location: string,
  response: http.IncomingMessage
): StorageError.StorageError | transfer.Retryable => {
  const status = response.statusCode ?? 0
  const code = String(response.headers["x-error-code"] ?? "")
  const repo = `${settings.repoId} (${settings.repoType})`
  const hasToken = settings.token !== undefined
  const giveToken = "give a token (the token kwarg, HF_TOKEN, or `hf auth login`)"
  if (code === "GatedRepo") {
    return new StorageError.Unauthorized({
      location,
      status,
      reason: hasToken
        ? `${repo} is gated, and this token's account has not been granted access: ask for it on the repository's page`
        : `${repo} is gated: ${giveToken} of an account that was granted access on the repository's page`
    })
  }
  if (code === "RepoNotFound") {
    return status === 401 && !hasToken
      ? new StorageError.Unauthorized({
        location,
        status,
        reason: `no repository ${repo} that can be read without a token on ${settings.endpoint}: if it is private, ${giveToken}; else check its name`
      })
      : new StorageError.RemoteNotFound({
        location,
        status,
        reason: `no repository ${repo} on ${settings.endpoint}${hasToken ? " that this token can read" : ""}`
      })
  }
  if (code === "RevisionNotFound") {
    return new StorageError.RemoteNotFound({ location, status, reason: `no revision ${settings.revision} in ${repo}` })
  }
  if (code === "EntryNotFound") {
    return new StorageError.RemoteNotFound({ location, status, reason: `no such file in ${repo} at ${settings.revision}` })
  }
  return network.failureOf({
    location,
    status,
    unauthorized: hasToken ? "the token was refused (expired, revoked, or without read access)" : giveToken,
    retryAfter: transfer.retryAfterOf(response.headers["retry-after"] as string | undefined)
  })
}

/** A load's client: its agents, and the commit its listing resolved the revision to. */
interface Client {
  readonly agents: { readonly http: http.Agent; readonly https: https.Agent }
  commit: string | undefined
}

/**
 * The Hub source: list through the API, read through `resolve/<commit>`.
 *
 * @internal
 */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    const extraCa = yield* network.caBundleOf(settings.caBundle, "hf")
    const secret: Record<string, string> = settings.token === undefined
      ? {}
      : { authorization: `Bearer ${Redacted.value(settings.token)}` }
    const timeoutMillis = Duration.toMillis(settings.connectTimeout)
    const headers = { "accept-encoding": "identity", "user-agent": "mlup-storage" }
    const allow = settings.allowPatterns?.map(globToRegExp)
    const ignore = settings.ignorePatterns?.map(globToRegExp)
    const patternsShown = [
      ...(settings.allowPatterns === undefined ? [] : [`allow_patterns ${JSON.stringify(settings.allowPatterns)}`]),
      ...(settings.ignorePatterns === undefined ? [] : [`ignore_patterns ${JSON.stringify(settings.ignorePatterns)}`])
    ].join(", ")
    const at = (file: string) => locationOf(settings, file)

    // One JSON answer of the API (its Link to a next page, if any).
    const getJson = <A, I>(client: Client, url: string, location: string, schema: Schema.Schema<A, I>) =>
      Effect.scoped(Effect.gen(function*() {
        const answer = yield* Effect.mapError(
          network.get(client.agents, url, { headers: { ...headers, accept: "application/json" }, secret, timeoutMillis }),
          network.fromRequestFailure(location)
        )
        if (answer.response.statusCode !== 200) return yield* Effect.fail(failureOf(settings, location, answer.response))
        // A body that stops coming fails the attempt (retried), as a stalled download does.
        const text = yield* network.readText(answer.response, maxListing).pipe(
          Effect.timeoutFail({
            duration: settings.stallTimeout,
            onTimeout: () => new transfer.Retryable({ reason: `the API's answer stalled for ${Duration.format(settings.stallTimeout)}` })
          }),
          Effect.mapError((error) =>
            error === "too large"
              ? new StorageError.RequestRejected({ location, status: 200, reason: `an answer of the API is larger than ${maxListing} bytes` })
              : error
          )
        )
        const decoded = Schema.decodeUnknownEither(Schema.parseJson(schema))(text)
        if (Either.isLeft(decoded)) {
          return yield* new StorageError.RequestRejected({
            location,
            status: 200,
            reason: `the answer of ${new URL(url).pathname} is not what the Hub's API sends: is ${settings.endpoint} a Hugging Face Hub?`
          })
        }
        const link = /<([^>]+)>\s*;\s*rel="?next"?/.exec(String(answer.response.headers["link"] ?? ""))?.[1]
        const next = link === undefined ? undefined : new URL(link, answer.url)
        // The next page is asked for with the token: only on the Hub's own origin.
        if (next !== undefined && next.origin !== new URL(settings.endpoint).origin) {
          return yield* new StorageError.RequestRejected({
            location,
            status: 200,
            reason: `the API's next page is on another origin (${next.origin}): not followed with the token`
          })
        }
        return { value: decoded.right, next: next?.href }
      }))

    // A commit's files: from the cache when this commit was listed before, else the API's tree, page by page.
    const treesDir = path.join(settings.cacheDir, "hf", "trees", cache.keyOf(settings.endpoint, settings.repoType, settings.repoId))
    const treeOf = (client: Client, api: string, commit: string, location: string) =>
      Effect.gen(function*() {
        const file = path.join(treesDir, `${commit}.json`)
        const kept = settings.cache === false ? Option.none<Tree>() : yield* cache.readJson<Tree>(file)
        if (Option.isSome(kept) && kept.value.commit === commit && Array.isArray(kept.value.files)) return kept.value
        const files: Array<Tree["files"][number]> = []
        let url: string | undefined = `${api}/tree/${commit}?recursive=true&expand=false`
        while (url !== undefined) {
          const page: { readonly value: typeof TreePage.Type; readonly next: string | undefined } = yield* getJson(
            client,
            url,
            location,
            TreePage
          )
          for (const entry of page.value) {
            if (entry.type !== "file") continue
            files.push({
              path: entry.path,
              size: entry.lfs?.size ?? entry.size ?? 0,
              blobId: entry.oid,
              lfsSha256: entry.lfs?.oid
            })
          }
          url = page.next
        }
        const tree: Tree = { commit, files }
        if (settings.cache !== false) {
          yield* Effect.ignore(Effect.zipRight(cache.ensureDir(treesDir), cache.writeJsonAtomic(file, tree, { flush: false })))
        }
        return tree
      })

    const source: snapshot.Source<Client> = {
      storageType: "hf",
      folder: "hf",
      cacheKey: [settings.endpoint, settings.repoType, settings.repoId, settings.revision, settings.pathInRepo],
      locationOf: at,
      prefix: settings.pathInRepo,
      mask: settings.mask ?? mask_.fromRegExp(/(?:)/),
      maskShown: [
        ...(patternsShown === "" ? [] : [patternsShown]),
        ...(settings.mask === undefined ? [] : [`file_mask ${mask_.sourceOf(settings.mask)}`])
      ].join(", ") || "(every file)",
      keep: (key) =>
        (allow === undefined || allow.some((glob) => glob.test(key))) && !(ignore ?? []).some((glob) => glob.test(key)),
      maskField: "file_mask",
      nothingListed: "the repository has no files at this revision",
      connect: Effect.map(network.agentsFor("hf", extraCa), (agents): Client => ({ agents, commit: undefined })),
      list: (client) =>
        Effect.gen(function*() {
          const location = at("")
          const api = `${settings.endpoint}/api/${settings.repoType}s/${settings.repoId}`
          // A commit is its own resolution; a branch or tag is asked for (one request).
          const commit = /^[0-9a-f]{40}$/.test(settings.revision)
            ? settings.revision
            : (yield* getJson(client, `${api}/revision/${encodeURIComponent(settings.revision)}`, location, RevisionInfo)).value.sha
          client.commit = commit
          const tree = yield* treeOf(client, api, commit, location)
          yield* Effect.logDebug(`${cap(location)} is commit ${commit} (${tree.files.length} files)`)
          const files = tree.files.map((file): snapshot.Listed =>
            file.lfsSha256 !== undefined
              ? {
                key: file.path,
                size: file.size,
                etag: file.lfsSha256,
                checks: [{ algorithm: "sha256", label: "sha256 (the Hub's LFS pointer)", expected: file.lfsSha256 }]
              }
              : {
                key: file.path,
                size: file.size,
                etag: file.blobId ?? `${commit}:${file.path}`,
                // A regular file's blob id is git's: the sha1 of "blob <size>\0" and the bytes.
                checks: file.blobId === undefined
                  ? []
                  : [{ algorithm: "sha1", label: "git blob sha1", expected: file.blobId, preamble: `blob ${file.size}\0` }]
              }
          )
          return files
        }),
      get: (client, entry, range) =>
        Effect.gen(function*() {
          const location = at(entry.key)
          const url = `${settings.endpoint}/${typeSegment(settings.repoType)}${settings.repoId}/resolve/` +
            `${client.commit ?? encodeURIComponent(settings.revision)}/${encodePath(entry.key)}`
          // The token goes to the Hub only; a redirect to its CDN (another origin) goes without it.
          const answer = yield* Effect.mapError(
            network.get(client.agents, url, {
              headers: range === undefined ? headers : { ...headers, range: `bytes=${range.start}-${range.end - 1}` },
              secret,
              timeoutMillis
            }),
            network.fromRequestFailure(location)
          )
          const status = answer.response.statusCode ?? 0
          if (status !== 200 && status !== 206) return yield* Effect.fail(failureOf(settings, location, answer.response))
          const served = range === undefined ? undefined : transfer.parseContentRange(answer.response.headers["content-range"])
          if (range !== undefined && (status !== 206 || served?.start !== range.start)) {
            return yield* new StorageError.RequestRejected({
              location,
              status,
              reason: "the server did not answer the byte range asked for: set multipart_threshold_mb above the file's size"
            })
          }
          // No ETag to compare: the commit pins the file, and its bytes are checked against the listed digests.
          return { body: answer.response, etag: undefined, range: served } satisfies snapshot.Got
        })
    }
    return yield* snapshot.make(source, settings)
  })
