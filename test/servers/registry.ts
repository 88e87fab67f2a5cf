/**
 * A real OCI registry on 127.0.0.1 for the tests: Debian's docker-registry
 * package (the CNCF distribution registry), started with a config of the
 * test's: anonymous, htpasswd (Basic), or token auth with a small token
 * service of the tests' own (JWTs signed by a key whose certificate the
 * registry trusts); or as a pull-through cache of another registry
 * (`proxy.remoteurl`). Artifacts are pushed through the registry's own HTTP
 * API, as ORAS pushes them (blobs, then the manifest that names them).
 */
import bcrypt from "bcryptjs"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFileSync, spawn } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

export const binary = "/usr/bin/docker-registry"
export const skopeo = "/usr/bin/skopeo"

export type Auth =
  | { readonly kind: "none" }
  | { readonly kind: "basic"; readonly username: string; readonly password: string }
  /** Tokens from the tests' service; `anonymousPull`: a token without credentials may pull. */
  | { readonly kind: "token"; readonly username: string; readonly password: string; readonly anonymousPull?: boolean }

export interface Registry {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string
  /** `127.0.0.1:<port>`: the registry part of a reference. */
  readonly host: string
  /** Where it keeps its blobs. */
  readonly root: string
  /** Requests the token service answered (scope, whether credentials came). */
  readonly tokenRequests: Array<{ readonly scope: string; readonly authenticated: boolean }>
  /** Pushes blobs and a manifest; succeeds with the manifest's digest. */
  readonly pushArtifact: (repository: string, tag: string, files: Record<string, Uint8Array | string>, options?: {
    readonly artifactType?: string
    readonly unnamed?: Uint8Array
  }) => Promise<{ readonly digest: string; readonly size: number; readonly layers: Record<string, string> }>
  readonly pushIndex: (repository: string, tag: string, manifests: ReadonlyArray<{
    readonly digest: string
    readonly size: number
    readonly platform?: { readonly os: string; readonly architecture: string }
  }>) => Promise<string>
  /**
   * An image pushed the way users push images: an OCI image layout made on
   * disk (each layer a tar.gz made by GNU tar, from the files given: a
   * string or bytes for a file, `{ link }` for a symbolic link), copied to
   * the registry by skopeo. Succeeds with the manifest's digest.
   */
  readonly pushImage: (repository: string, tag: string, layers: ReadonlyArray<Record<string, string | Uint8Array | { readonly link: string }>>) => Promise<string>
  /** The file a blob is kept in (to tamper with it). */
  readonly blobFile: (digest: string) => string
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

const sha256 = (bytes: Uint8Array | string) => `sha256:${crypto.createHash("sha256").update(bytes).digest("hex")}`
const base64url = (value: Buffer | string) => Buffer.from(value).toString("base64url")

/** A request of the tests' own to a registry (no keep-alive), answering a Bearer or Basic challenge once. */
const request = async (
  url: string,
  options: { readonly method: string; readonly headers?: Record<string, string>; readonly body?: Uint8Array | string },
  credentials: { readonly username: string; readonly password: string } | undefined
): Promise<{ readonly status: number; readonly headers: http.IncomingHttpHeaders; readonly body: Buffer }> => {
  const once = (authorization: string | undefined) =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      // The tests' own client: it trusts the registry's test certificate (the storage under test does not).
      const req = (url.startsWith("https:") ? https : http).request(url, {
        method: options.method,
        headers: { ...options.headers, ...(authorization === undefined ? {} : { authorization }), connection: "close" },
        rejectUnauthorized: false
      }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      })
      req.on("error", reject)
      req.end(options.body === undefined ? undefined : Buffer.from(options.body))
    })
  const first = await once(undefined)
  if (first.status !== 401 || credentials === undefined) return first
  const basic = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`
  const challenge = String(first.headers["www-authenticate"] ?? "")
  if (challenge.startsWith("Basic")) return once(basic)
  const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map(([, key, value]) => [key!, value!]))
  const tokenUrl = new URL(params["realm"]!)
  tokenUrl.searchParams.set("service", params["service"] ?? "")
  tokenUrl.searchParams.set("scope", params["scope"] ?? "")
  const answer = await fetch(tokenUrl, { headers: { authorization: basic } })
  const { token } = await answer.json() as { token: string }
  return once(`Bearer ${token}`)
}

/** The tests' token service: signs JWTs for the registry with a key it made (the registry trusts its certificate). */
const tokenService = async (dir: string, auth: Extract<Auth, { kind: "token" }>, requests: Registry["tokenRequests"]) => {
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key", "-out", "token.pem", "-days", "2",
    "-subj", "/CN=mlup-storage test token issuer"
  ], { cwd: dir, stdio: "ignore" })
  const key = crypto.createPrivateKey(fs.readFileSync(path.join(dir, "token.key")))
  const certDer = new crypto.X509Certificate(fs.readFileSync(path.join(dir, "token.pem"))).raw
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1")
    const scope = url.searchParams.get("scope") ?? ""
    const header = req.headers.authorization
    const expected = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`
    const authenticated = header === expected
    requests.push({ scope, authenticated })
    if (header !== undefined && !authenticated) {
      res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED" }] }))
      return
    }
    const [, name = "", actions = ""] = /^repository:([^:]+):(.*)$/.exec(scope) ?? []
    const allowed = authenticated ? actions.split(",") : auth.anonymousPull === true ? actions.split(",").filter((a) => a === "pull") : []
    const now = Math.floor(Date.now() / 1000)
    const head = base64url(JSON.stringify({ alg: "RS256", typ: "JWT", x5c: [certDer.toString("base64")] }))
    const claims = base64url(JSON.stringify({
      iss: "mlup-storage-tests",
      sub: authenticated ? auth.username : "",
      aud: "mlup-storage-registry",
      exp: now + 600,
      nbf: now - 10,
      iat: now,
      jti: crypto.randomUUID(),
      access: name === "" ? [] : [{ type: "repository", name, actions: allowed }]
    }))
    const signature = crypto.sign("sha256", Buffer.from(`${head}.${claims}`), key).toString("base64url")
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: `${head}.${claims}.${signature}` }))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return { server, realm: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/token`, certFile: path.join(dir, "token.pem") }
}

/** A registry, stopped (and its folder removed) when the scope closes. */
export const make = (options: {
  readonly auth?: Auth
  /** A pull-through cache of this registry (read-only). */
  readonly proxyOf?: { readonly endpoint: string; readonly username?: string; readonly password?: string }
  /** Over HTTPS with this certificate (PEM) and key. */
  readonly tls?: { readonly cert: string; readonly key: string }
} = {}): Effect.Effect<Registry, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const auth = options.auth ?? { kind: "none" }
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-storage-registry-"))
      const port = await freePort()
      const tokenRequests: Registry["tokenRequests"] = []
      const token = auth.kind === "token" ? await tokenService(dir, auth, tokenRequests) : undefined
      if (auth.kind === "basic") {
        fs.writeFileSync(path.join(dir, "htpasswd"), `${auth.username}:${bcrypt.hashSync(auth.password, 5)}\n`)
      }
      const config = [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        `    rootdirectory: ${path.join(dir, "data")}`,
        "  delete:",
        "    enabled: true",
        "http:",
        `  addr: 127.0.0.1:${port}`,
        "  secret: mlup-storage-tests",
        ...(options.tls === undefined
          ? []
          : ["  tls:", `    certificate: ${path.join(dir, "tls.pem")}`, `    key: ${path.join(dir, "tls.key")}`]),
        ...(auth.kind === "basic"
          ? ["auth:", "  htpasswd:", "    realm: mlup-storage-tests", `    path: ${path.join(dir, "htpasswd")}`]
          : []),
        ...(token !== undefined
          ? [
            "auth:",
            "  token:",
            `    realm: ${token.realm}`,
            "    service: mlup-storage-registry",
            "    issuer: mlup-storage-tests",
            `    rootcertbundle: ${token.certFile}`
          ]
          : []),
        ...(options.proxyOf !== undefined
          ? [
            "proxy:",
            `  remoteurl: ${options.proxyOf.endpoint}`,
            ...(options.proxyOf.username === undefined ? [] : [`  username: ${options.proxyOf.username}`, `  password: ${options.proxyOf.password}`])
          ]
          : [])
      ].join("\n")
      if (options.tls !== undefined) {
        fs.writeFileSync(path.join(dir, "tls.pem"), options.tls.cert)
        fs.writeFileSync(path.join(dir, "tls.key"), options.tls.key)
      }
      fs.writeFileSync(path.join(dir, "config.yml"), `${config}\n`)
      if (!fs.existsSync(binary)) {
        throw new Error(`${binary} is missing: the OCI tests start Debian's docker-registry (apt-get install docker-registry; npm test installs it as root)`)
      }
      const child = spawn(binary, ["serve", path.join(dir, "config.yml")], { stdio: ["ignore", "ignore", "pipe"] })
      let stderr = ""
      child.stderr.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)))
      const endpoint = `${options.tls === undefined ? "http" : "https"}://127.0.0.1:${port}`
      for (let i = 0; ; i++) {
        const up = await new Promise<boolean>((resolve) => {
          const req = (options.tls === undefined ? http : https).get(`${endpoint}/v2/`, { rejectUnauthorized: false }, (res) => {
            res.resume()
            resolve(true)
          })
          req.on("error", () => resolve(false))
        })
        if (up) break
        if (i > 200 || child.exitCode !== null) throw new Error(`docker-registry did not start: ${stderr}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      const credentials = auth.kind === "none" ? undefined : auth
      const pushBlob = async (repository: string, bytes: Uint8Array | string) => {
        const digest = sha256(bytes)
        const started = await request(`${endpoint}/v2/${repository}/blobs/uploads/`, { method: "POST" }, credentials)
        if (started.status !== 202) throw new Error(`upload refused: ${started.status} ${started.body}`)
        const location = new URL(String(started.headers.location), endpoint)
        location.searchParams.set("digest", digest)
        const put = await request(location.href, {
          method: "PUT",
          headers: { "content-type": "application/octet-stream" },
          body: bytes
        }, credentials)
        if (put.status !== 201) throw new Error(`blob refused: ${put.status} ${put.body}`)
        return { digest, size: Buffer.byteLength(bytes) }
      }
      const pushManifest = async (repository: string, reference: string, manifest: unknown, mediaType: string) => {
        const body = JSON.stringify(manifest)
        const put = await request(`${endpoint}/v2/${repository}/manifests/${reference}`, {
          method: "PUT",
          headers: { "content-type": mediaType },
          body
        }, credentials)
        if (put.status !== 201) throw new Error(`manifest refused: ${put.status} ${put.body}`)
        return { digest: sha256(body), size: Buffer.byteLength(body) }
      }
      const registry: Registry & { readonly stop: () => void } = {
        endpoint,
        host: `127.0.0.1:${port}`,
        root: path.join(dir, "data"),
        tokenRequests,
        pushArtifact: async (repository, tag, files, artifact = {}) => {
          const config = await pushBlob(repository, "{}")
          const layers: Record<string, string> = {}
          const descriptors = []
          for (const [title, bytes] of Object.entries(files)) {
            const blob = await pushBlob(repository, bytes)
            layers[title] = blob.digest
            descriptors.push({
              mediaType: "application/vnd.oci.image.layer.v1.tar",
              ...blob,
              annotations: { "org.opencontainers.image.title": title }
            })
          }
          if (artifact.unnamed !== undefined) {
            descriptors.push({ mediaType: "application/vnd.oci.image.layer.v1.tar", ...(await pushBlob(repository, artifact.unnamed)) })
          }
          const manifest = await pushManifest(repository, tag, {
            schemaVersion: 2,
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            artifactType: artifact.artifactType ?? "application/vnd.mlup-storage.model.v1",
            config: { mediaType: "application/vnd.oci.empty.v1+json", ...config },
            layers: descriptors
          }, "application/vnd.oci.image.manifest.v1+json")
          return { ...manifest, layers }
        },
        pushIndex: async (repository, tag, manifests) =>
          (await pushManifest(repository, tag, {
            schemaVersion: 2,
            mediaType: "application/vnd.oci.image.index.v1+json",
            manifests: manifests.map((one) => ({ mediaType: "application/vnd.oci.image.manifest.v1+json", ...one }))
          }, "application/vnd.oci.image.index.v1+json")).digest,
        pushImage: async (repository, tag, layers) => {
          const work = fs.mkdtempSync(path.join(dir, "image-"))
          const blobs = path.join(work, "layout", "blobs", "sha256")
          fs.mkdirSync(blobs, { recursive: true })
          const put = (bytes: Buffer) => {
            const digest = sha256(bytes)
            fs.writeFileSync(path.join(blobs, digest.slice("sha256:".length)), bytes)
            return { digest, size: bytes.byteLength }
          }
          const descriptors = []
          const diffIds = []
          for (const [i, files] of layers.entries()) {
            const src = path.join(work, `layer-${i}`)
            fs.mkdirSync(src, { recursive: true })
            for (const [name, content] of Object.entries(files)) {
              fs.mkdirSync(path.dirname(path.join(src, name)), { recursive: true })
              if (typeof content === "object" && "link" in content) fs.symlinkSync(content.link, path.join(src, name))
              else fs.writeFileSync(path.join(src, name), content)
            }
            const tar = execFileSync("tar", ["-cf", "-", "-C", src, "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "."], { maxBuffer: 1024 ** 3 })
            diffIds.push(sha256(tar))
            descriptors.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...put(execFileSync("gzip", ["-n"], { input: tar, maxBuffer: 1024 ** 3 })) })
          }
          const config = put(Buffer.from(JSON.stringify({
            architecture: "amd64",
            os: "linux",
            config: {},
            rootfs: { type: "layers", diff_ids: diffIds }
          })))
          const manifest = put(Buffer.from(JSON.stringify({
            schemaVersion: 2,
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
            layers: descriptors
          })))
          fs.writeFileSync(path.join(work, "layout", "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }))
          fs.writeFileSync(path.join(work, "layout", "index.json"), JSON.stringify({
            schemaVersion: 2,
            manifests: [{
              mediaType: "application/vnd.oci.image.manifest.v1+json",
              ...manifest,
              annotations: { "org.opencontainers.image.ref.name": tag }
            }]
          }))
          execFileSync("skopeo", [
            "copy", "--quiet", "--dest-tls-verify=false",
            ...(credentials === undefined ? [] : ["--dest-creds", `${credentials.username}:${credentials.password}`]),
            `oci:${path.join(work, "layout")}:${tag}`, `docker://127.0.0.1:${port}/${repository}:${tag}`
          ], { stdio: ["ignore", "ignore", "pipe"] })
          fs.rmSync(work, { recursive: true, force: true })
          return manifest.digest
        },
        blobFile: (digest) => {
          const hex = digest.slice("sha256:".length)
          return path.join(dir, "data", "docker", "registry", "v2", "blobs", "sha256", hex.slice(0, 2), hex, "data")
        },
        stop: () => {
          child.kill()
          token?.server.close()
          fs.rmSync(dir, { recursive: true, force: true })
        }
      }
      return registry
    }),
    (registry) => Effect.sync(() => registry.stop())
  )
