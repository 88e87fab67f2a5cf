/**
 * A Hugging Face Hub of the tests' own on 127.0.0.1, speaking the Hub's HTTP
 * API as huggingface_hub's client uses it (checked against huggingface_hub
 * itself by scripts/check-hub-server.py):
 *
 * - `GET /api/{models,datasets,spaces}/<repo>[/revision/<rev>]`: the commit
 *   (`sha`) and `siblings` (with `?blobs=true`: sizes, blob ids, LFS).
 * - `GET /api/…/<repo>/tree/<commit>?recursive=true`: the files, in pages
 *   linked by a `Link: <…>; rel="next"` header.
 * - `POST /api/…/<repo>/paths-info/<commit>` (JSON `{ paths, expand }`): the
 *   tree's entries of those paths (as @huggingface/hub asks for them).
 * - `GET|HEAD /[datasets/|spaces/]<repo>/resolve/<rev>/<path>`: a regular
 *   file from the Hub itself (ETag: its git blob id); an LFS file as a 302 to
 *   the CDN (another origin) with X-Linked-Etag (its sha256) and
 *   X-Linked-Size; X-Repo-Commit always; ranges answered with 206.
 * - 401 / 403 / 404 with the Hub's `X-Error-Code` (RepoNotFound,
 *   RevisionNotFound, EntryNotFound, GatedRepo) as the Hub sends them: a
 *   private or missing repository is a 401 without a token, a 404 with one.
 * - A renamed repository answers with a 307 to its new name.
 *
 * The CDN refuses any request that carries an Authorization header (as S3's
 * presigned URLs do). Every request is logged.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as crypto from "node:crypto"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

export type RepoType = "model" | "dataset" | "space"

export interface HubLog {
  readonly server: "hub" | "cdn"
  readonly method: string
  readonly url: string
  readonly authorization: string | undefined
  readonly range: string | undefined
}

interface Blob {
  readonly bytes: Buffer
  readonly blobId: string
  readonly sha256: string
  readonly lfs: boolean
}

interface Repo {
  readonly type: RepoType
  readonly id: string
  visibility: "public" | "private" | "gated"
  /** Tokens that may read it (private) or were granted access (gated). */
  readonly readers: Set<string>
  readonly refs: Map<string, string>
  readonly commits: Map<string, Map<string, Blob>>
}

const gitBlobId = (bytes: Buffer) =>
  crypto.createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex")

const sha256 = (bytes: Buffer) => crypto.createHash("sha256").update(bytes).digest("hex")

const typeSegment: Record<string, RepoType> = { models: "model", datasets: "dataset", spaces: "space" }

export class TestHub {
  readonly log: Array<HubLog> = []
  /** Tokens the Hub knows. */
  readonly tokens = new Set<string>()
  /** Files at least this large (or named *.onnx, *.safetensors, *.bin) are stored in LFS. */
  lfsThreshold = 10 * 1024
  /** Entries per page of a tree listing. */
  treePageSize = 1000
  /** Where the tree's next pages are said to be (a hostile or broken Hub: another origin). */
  nextPageOrigin: string | undefined
  /** Called before each resolve of a file (a push during a download, say). */
  beforeResolve: ((path: string) => void) | undefined
  /** A 206 holds at most this many bytes, whatever range was asked for (as RFC 9110 allows). */
  maxRangeLength: number | undefined
  /** Paths whose bytes stop after the first half (the connection stays open, as a stalled transfer). */
  readonly stalled = new Set<string>()
  /** Paths whose bytes the CDN or Hub corrupts (one byte flipped). */
  readonly corrupt = new Set<string>()
  private readonly repos = new Map<string, Repo>()
  private readonly renames = new Map<string, string>()
  private readonly blobs = new Map<string, Blob>()
  private readonly hub: http.Server
  private readonly cdn: http.Server
  private commitCount = 0

  constructor() {
    this.hub = http.createServer((req, res) => this.serveHub(req, res))
    this.cdn = http.createServer((req, res) => this.serveCdn(req, res))
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`
  }

  /** On another loopback address: another host, as the Hub's CDN is (clients tell a CDN by its host name). */
  get cdnOrigin(): string {
    return `http://127.0.0.2:${(this.cdn.address() as AddressInfo).port}`
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.hub.listen(0, "127.0.0.1", resolve))
    await new Promise<void>((resolve) => this.cdn.listen(0, "127.0.0.2", resolve))
  }

  async close(): Promise<void> {
    for (const server of [this.hub, this.cdn]) {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }

  /** A new commit on `branch` (default main) with exactly these files; returns its sha. */
  push(
    id: string,
    files: Readonly<Record<string, Uint8Array | string>>,
    options: { readonly type?: RepoType; readonly branch?: string; readonly visibility?: Repo["visibility"] } = {}
  ): string {
    const type = options.type ?? "model"
    const key = `${type}/${id}`
    let repo = this.repos.get(key)
    if (repo === undefined) {
      repo = { type, id, visibility: options.visibility ?? "public", readers: new Set(), refs: new Map(), commits: new Map() }
      this.repos.set(key, repo)
    }
    if (options.visibility !== undefined) repo.visibility = options.visibility
    const tree = new Map<string, Blob>()
    for (const [path, content] of Object.entries(files)) {
      const bytes = Buffer.from(content)
      const blob: Blob = {
        bytes,
        blobId: gitBlobId(bytes),
        sha256: sha256(bytes),
        lfs: bytes.length >= this.lfsThreshold || /\.(onnx|safetensors|bin)$/.test(path)
      }
      this.blobs.set(blob.sha256, blob)
      tree.set(path, blob)
    }
    const commit = crypto.createHash("sha1").update(`${key}:${this.commitCount++}:${Date.now()}`).digest("hex")
    repo.commits.set(commit, tree)
    repo.refs.set(options.branch ?? "main", commit)
    return commit
  }

  tag(id: string, name: string, commit: string, type: RepoType = "model"): void {
    this.repos.get(`${type}/${id}`)!.refs.set(name, commit)
  }

  grant(id: string, token: string, type: RepoType = "model"): void {
    this.tokens.add(token)
    this.repos.get(`${type}/${id}`)!.readers.add(token)
  }

  rename(from: string, to: string, type: RepoType = "model"): void {
    const repo = this.repos.get(`${type}/${from}`)!
    this.repos.delete(`${type}/${from}`)
    this.repos.set(`${type}/${to}`, { ...repo, id: to })
    this.renames.set(`${type}/${from}`, to)
  }

  requests(server: "hub" | "cdn", match?: RegExp): Array<HubLog> {
    return this.log.filter((entry) => entry.server === server && (match === undefined || match.test(entry.url)))
  }

  private fail(res: http.ServerResponse, status: number, code: string | undefined, message: string) {
    res.writeHead(status, {
      "content-type": "application/json",
      ...(code === undefined ? {} : { "x-error-code": code }),
      "x-error-message": message
    })
    res.end(JSON.stringify({ error: message }))
  }

  /** The repository a request may see, or the failure the Hub answers with. */
  private access(req: http.IncomingMessage, res: http.ServerResponse, type: RepoType, id: string, forFiles: boolean) {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1]
    if (token !== undefined && !this.tokens.has(token)) {
      this.fail(res, 401, undefined, "Invalid credentials in Authorization header")
      return undefined
    }
    const repo = this.repos.get(`${type}/${id}`)
    if (repo === undefined || (repo.visibility === "private" && (token === undefined || !repo.readers.has(token)))) {
      // As the Hub: without a token a missing and a private repository look alike (401), with one a 404.
      this.fail(res, token === undefined ? 401 : 404, "RepoNotFound", "Repository not found")
      return undefined
    }
    if (repo.visibility === "gated" && forFiles && (token === undefined || !repo.readers.has(token))) {
      this.fail(
        res,
        token === undefined ? 401 : 403,
        "GatedRepo",
        `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`
      )
      return undefined
    }
    return repo
  }

  private serveHub(req: http.IncomingMessage, res: http.ServerResponse) {
    this.log.push({ server: "hub", method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, range: req.headers.range })
    const url = new URL(req.url ?? "/", this.endpoint)
    const segments = url.pathname.split("/").slice(1)
    if (segments[0] === "api") {
      const type = typeSegment[segments[1] ?? ""]
      if (type === undefined) return this.fail(res, 404, undefined, "Not found")
      // /api/models/<org>/<name>/(revision|tree)/<rev>[/path]  or  /api/models/<name>/(revision|tree)/<rev>
      // /api/models/<repo> alone: the info of main.
      const found = segments.findIndex((segment, i) =>
        i >= 3 && (segment === "revision" || segment === "tree" || segment === "paths-info")
      )
      const verbAt = found === -1 ? segments.length : found
      if (found === -1) segments.push("revision", "main")
      const id = segments.slice(2, verbAt).map(decodeURIComponent).join("/")
      if (this.redirectRenamed(res, type, id, url)) return
      const repo = this.access(req, res, type, id, false)
      if (repo === undefined) return
      const revision = decodeURIComponent(segments[verbAt + 1] ?? "")
      const commit = this.commitOf(repo, revision)
      if (commit === undefined) return this.fail(res, 404, "RevisionNotFound", `Invalid rev id: ${revision}`)
      const tree = repo.commits.get(commit)!
      if (segments[verbAt] === "revision") {
        const blobs = url.searchParams.get("blobs") === "true"
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify({
          _id: crypto.createHash("md5").update(id).digest("hex").slice(0, 24),
          id,
          ...(type === "model" ? { modelId: id } : {}),
          author: id.includes("/") ? id.split("/")[0] : undefined,
          sha: commit,
          lastModified: new Date(0).toISOString(),
          private: repo.visibility === "private",
          disabled: false,
          gated: repo.visibility === "gated" ? "auto" : false,
          tags: [],
          downloads: 0,
          likes: 0,
          siblings: [...tree].map(([rfilename, blob]) => ({
            rfilename,
            ...(blobs
              ? {
                size: blob.bytes.length,
                blobId: blob.blobId,
                ...(blob.lfs ? { lfs: { sha256: blob.sha256, size: blob.bytes.length, pointerSize: 134 } } : {})
              }
              : {})
          }))
        }))
        return
      }
      // The tree: every file (recursive), in pages.
      const entries = [...tree].sort(([a], [b]) => (a < b ? -1 : 1)).map(([path, blob]) => ({
        type: "file",
        oid: blob.blobId,
        size: blob.bytes.length,
        path,
        ...(blob.lfs ? { lfs: { oid: blob.sha256, size: blob.bytes.length, pointerSize: 134 } } : {})
      }))
      if (segments[verbAt] === "paths-info") {
        let body = ""
        req.on("data", (chunk) => (body += chunk))
        req.on("end", () => {
          let asked: { readonly paths?: ReadonlyArray<string>; readonly expand?: boolean }
          try {
            asked = JSON.parse(body)
          } catch {
            return this.fail(res, 400, undefined, "Bad request")
          }
          const paths = new Set(asked.paths ?? [])
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify(entries.filter((entry) => paths.has(entry.path)).map((entry) => ({
            ...entry,
            ...(asked.expand === true ? { lastCommit: { id: commit, title: "", date: new Date(0).toISOString() } } : {})
          }))))
        })
        return
      }
      const cursor = Number(url.searchParams.get("cursor") ?? "0")
      const page = entries.slice(cursor, cursor + this.treePageSize)
      const headers: Record<string, string> = { "content-type": "application/json" }
      if (cursor + this.treePageSize < entries.length) {
        const next = new URL(`${url.pathname}${url.search}`, this.nextPageOrigin ?? this.endpoint)
        next.searchParams.set("cursor", String(cursor + this.treePageSize))
        headers["link"] = `<${next.href}>; rel="next"`
      }
      res.writeHead(200, headers)
      res.end(JSON.stringify(page))
      return
    }
    // /[datasets/|spaces/]<org>/<name>/resolve/<rev>/<path>
    let type: RepoType = "model"
    if (segments[0] === "datasets" || segments[0] === "spaces") {
      type = typeSegment[segments.shift()!]!
    }
    const resolveAt = segments.indexOf("resolve")
    if (resolveAt < 1) return this.fail(res, 404, undefined, "Not found")
    const id = segments.slice(0, resolveAt).join("/")
    if (this.redirectRenamed(res, type, id, url)) return
    const repo = this.access(req, res, type, id, true)
    if (repo === undefined) return
    const revision = decodeURIComponent(segments[resolveAt + 1] ?? "")
    const commit = this.commitOf(repo, revision)
    if (commit === undefined) return this.fail(res, 404, "RevisionNotFound", `Invalid rev id: ${revision}`)
    const path = segments.slice(resolveAt + 2).map(decodeURIComponent).join("/")
    this.beforeResolve?.(path)
    const blob = repo.commits.get(commit)!.get(path)
    if (blob === undefined) return this.fail(res, 404, "EntryNotFound", `${path} does not exist on "${revision}"`)
    const common = { "x-repo-commit": commit, "access-control-expose-headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size" }
    if (blob.lfs) {
      res.writeHead(302, {
        ...common,
        location: `${this.cdnOrigin}/repos/${blob.sha256.slice(0, 2)}/${blob.sha256}?path=${encodeURIComponent(path)}&expires=0`,
        "x-linked-etag": `"${blob.sha256}"`,
        "x-linked-size": String(blob.bytes.length),
        etag: `"${blob.sha256}"`,
        "content-length": "0"
      })
      res.end()
      return
    }
    this.sendBytes(req, res, this.corrupt.has(path) ? flipped(blob.bytes) : blob.bytes, this.stalled.has(path), { ...common, etag: `"${blob.blobId}"` })
  }

  private serveCdn(req: http.IncomingMessage, res: http.ServerResponse) {
    this.log.push({ server: "cdn", method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, range: req.headers.range })
    if (req.headers.authorization !== undefined) {
      res.writeHead(400, { "content-type": "application/xml" })
      res.end("<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>")
      return
    }
    const url = new URL(req.url ?? "/", this.cdnOrigin)
    const blob = this.blobs.get(url.pathname.split("/").at(-1) ?? "")
    if (blob === undefined) {
      res.writeHead(404).end()
      return
    }
    const path = url.searchParams.get("path") ?? ""
    this.sendBytes(req, res, this.corrupt.has(path) ? flipped(blob.bytes) : blob.bytes, this.stalled.has(path), { etag: `"cdn-${blob.sha256.slice(0, 16)}"` })
  }

  private sendBytes(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    bytes: Buffer,
    stalled: boolean,
    headers: Record<string, string>
  ) {
    if (stalled && req.method !== "HEAD" && req.headers.range === undefined) {
      res.writeHead(200, { ...headers, "accept-ranges": "bytes", "content-length": String(bytes.length) })
      res.write(bytes.subarray(0, Math.floor(bytes.length / 2)))
      return
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "")
    if (range !== null) {
      const start = Number(range[1])
      const asked = range[2] === "" ? bytes.length - 1 : Math.min(Number(range[2]), bytes.length - 1)
      const end = this.maxRangeLength === undefined ? asked : Math.min(asked, start + this.maxRangeLength - 1)
      if (start >= bytes.length) {
        res.writeHead(416, { ...headers, "content-range": `bytes */${bytes.length}` }).end()
        return
      }
      res.writeHead(206, {
        ...headers,
        "accept-ranges": "bytes",
        "content-range": `bytes ${start}-${end}/${bytes.length}`,
        "content-length": String(end - start + 1)
      })
      res.end(req.method === "HEAD" ? undefined : bytes.subarray(start, end + 1))
      return
    }
    res.writeHead(200, { ...headers, "accept-ranges": "bytes", "content-length": String(bytes.length) })
    res.end(req.method === "HEAD" ? undefined : bytes)
  }

  private commitOf(repo: Repo, revision: string): string | undefined {
    if (repo.commits.has(revision)) return revision
    return repo.refs.get(revision)
  }

  private redirectRenamed(res: http.ServerResponse, type: RepoType, id: string, url: URL): boolean {
    const to = this.renames.get(`${type}/${id}`)
    if (to === undefined) return false
    res.writeHead(307, { location: `${url.pathname.replace(`/${id}/`, `/${to}/`)}${url.search}` })
    res.end()
    return true
  }
}

const flipped = (bytes: Buffer) => {
  const copy = Buffer.from(bytes)
  const middle = Math.floor(copy.length / 2)
  copy[middle] = copy[middle]! ^ 0xff
  return copy
}

export const make = (): Effect.Effect<TestHub, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const hub = new TestHub()
      await hub.listen()
      return hub
    }),
    (hub) => Effect.promise(() => hub.close())
  )
