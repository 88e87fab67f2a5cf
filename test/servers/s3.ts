/**
 * A real S3-compatible server on 127.0.0.1 (s3rver, in-process) for the tests:
 * objects are put through the AWS SDK, and every request is logged. s3rver
 * checks access key ids, not signatures; its paged listings need node's
 * --openssl-legacy-provider (set in vitest.config.ts).
 */
import { DeleteObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import S3rver from "s3rver"

export const accessKeyId = "S3RVER"
export const secretAccessKey = "S3RVER"

export interface RequestLog {
  readonly method: string
  readonly url: string
  readonly range: string | undefined
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
}

export interface TestS3Server {
  readonly endpoint: string
  readonly log: Array<RequestLog>
  readonly put: (bucket: string, key: string, body: Uint8Array | string) => Promise<void>
  readonly remove: (bucket: string, key: string) => Promise<void>
  readonly gets: (key?: string) => Array<RequestLog>
}

/**
 * How the server answers, as S3 does for objects stored otherwise than
 * plainly (s3rver stores everything plainly): through a forwarder in front
 * of s3rver that rewrites its answers.
 */
export interface Answers {
  /**
   * Server-side encryption: `aws:kms` and `aws:kms:dsse` (and a customer's
   * key, `sse-c`) give ETags that are not the MD5 of the object (each ETag is
   * replaced by another 32-hex value, in listings and GETs, and If-Match is
   * mapped back); `AES256` (SSE-S3) keeps the MD5 ETag. The header says which.
   */
  readonly encryption?: "aws:kms" | "aws:kms:dsse" | "sse-c" | "AES256"
  /** ETags replaced as for SSE-KMS, with no header saying so (a store whose ETags are not MD5s, silently). */
  readonly otherEtags?: boolean
  /** Keys whose GETs stop half-way (the connection stays open, as a stalled transfer), while the set holds them. */
  readonly stalled?: Set<string>
  /** The object's own checksum (`x-amz-checksum-sha256`, base64, a full-object one) sent with whole-object GETs, by key. */
  readonly sha256?: ReadonlyMap<string, string>
}

const forwarder = (upstreamPort: number, answers: Answers) => {
  const fakes = new Map<string, string>()
  const fake = (etag: string) => {
    if (!answers.otherEtags && (answers.encryption === undefined || answers.encryption === "AES256")) return etag
    const made = crypto.createHash("md5").update(`encrypted:${etag}`).digest("hex")
    fakes.set(made, etag)
    return made
  }
  return http.createServer((req, res) => {
    const headers = { ...req.headers }
    const ifMatch = headers["if-match"]?.replace(/"/g, "")
    if (ifMatch !== undefined && fakes.has(ifMatch)) headers["if-match"] = `"${fakes.get(ifMatch)}"`
    const upstream = http.request(
      { host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers },
      (answer) => {
        const out: http.OutgoingHttpHeaders = { ...answer.headers }
        const url = new URL(req.url ?? "/", "http://s3")
        if (url.searchParams.has("list-type")) {
          const chunks: Array<Buffer> = []
          answer.on("data", (chunk: Buffer) => chunks.push(chunk))
          answer.on("end", () => {
            const body = Buffer.concat(chunks).toString("utf8").replace(
              /<ETag>(&quot;|")([0-9a-f]{32})(&quot;|")<\/ETag>/g,
              (_, open: string, etag: string, close: string) => `<ETag>${open}${fake(etag)}${close}</ETag>`
            )
            out["content-length"] = String(Buffer.byteLength(body))
            res.writeHead(answer.statusCode ?? 502, out).end(body)
          })
          return
        }
        if ((req.method === "GET" || req.method === "HEAD") && (answer.statusCode === 200 || answer.statusCode === 206)) {
          const etag = String(answer.headers.etag ?? "").replace(/"/g, "")
          if (/^[0-9a-f]{32}$/.test(etag)) out.etag = `"${fake(etag)}"`
          if (answers.encryption === "sse-c") out["x-amz-server-side-encryption-customer-algorithm"] = "AES256"
          else if (answers.encryption !== undefined) out["x-amz-server-side-encryption"] = answers.encryption
          const key = decodeURIComponent(url.pathname.split("/").slice(2).join("/"))
          const sha256 = answers.sha256?.get(key)
          if (sha256 !== undefined && answer.statusCode === 200) {
            out["x-amz-checksum-sha256"] = sha256
            out["x-amz-checksum-type"] = "FULL_OBJECT"
          }
        }
        res.writeHead(answer.statusCode ?? 502, out)
        const stalledKey = decodeURIComponent(url.pathname.split("/").slice(2).join("/"))
        const length = Number(answer.headers["content-length"])
        if (req.method === "GET" && answers.stalled?.has(stalledKey) && length > 0) {
          let sent = 0
          answer.on("data", (chunk: Buffer) => {
            const room = Math.floor(length / 2) - sent
            if (room > 0) res.write(chunk.subarray(0, room))
            sent += chunk.length
          })
          return
        }
        answer.pipe(res)
      }
    )
    upstream.on("error", () => res.destroy())
    req.pipe(upstream)
  })
}

export const make = (buckets: ReadonlyArray<string>, answers?: Answers): Effect.Effect<TestS3Server, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const directory = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-s3rver-"))
      const server = new S3rver({
        port: 0,
        address: "127.0.0.1",
        silent: true,
        directory,
        configureBuckets: buckets.map((name) => ({ name })),
        vhostBuckets: false
      })
      const { port } = await server.run()
      const front = answers === undefined ? undefined : forwarder(port, answers)
      if (front !== undefined) await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve))
      const direct = `http://127.0.0.1:${port}`
      const endpoint = front === undefined ? direct : `http://127.0.0.1:${(front.address() as AddressInfo).port}`
      const log: Array<RequestLog> = []
      server.httpServer.on("request", (req) =>
        log.push({ method: req.method ?? "", url: req.url ?? "", range: req.headers.range, headers: req.headers }))
      const client = new S3Client({
        endpoint: direct,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: { accessKeyId, secretAccessKey }
      })
      return {
        directory,
        server,
        front,
        client,
        endpoint,
        log,
        put: async (bucket: string, key: string, body: Uint8Array | string) => {
          await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))
        },
        remove: async (bucket: string, key: string) => {
          await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))
        },
        gets: (key?: string) =>
          log.filter((entry) =>
            entry.method === "GET" && !entry.url.includes("list-type") &&
            (key === undefined || new URL(entry.url, endpoint).pathname.endsWith(`/${key}`))
          )
      }
    }),
    ({ client, directory, front, server }) =>
      Effect.promise(async () => {
        client.destroy()
        front?.closeAllConnections()
        if (front !== undefined) await new Promise((resolve) => front.close(resolve))
        server.httpServer.closeAllConnections()
        await server.close()
        fs.rmSync(directory, { recursive: true, force: true })
      })
  )
