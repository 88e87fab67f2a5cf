/**
 * A real HTTP server on 127.0.0.1 for the tests and the benchmark: serves
 * files from memory or disk with ETag, Last-Modified and Range (If-Range
 * honoured), and injects faults on demand, one request at a time.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import type { AddressInfo } from "node:net"

export type Fault =
  /** Answer as without a fault (to aim the next fault at a later request). */
  | { readonly kind: "none" }
  /** Answer with this status (and Retry-After, if given), no body. */
  | { readonly kind: "status"; readonly status: number; readonly retryAfter?: string }
  /** Send this many bytes of the body, then destroy the connection. */
  | { readonly kind: "drop"; readonly after: number }
  /** Send this many bytes of the body, then send nothing more (the socket stays open). */
  | { readonly kind: "stall"; readonly after: number }
  /** Announce a Content-Length 100 bytes larger than the body, send the body, end. */
  | { readonly kind: "wrongLength" }
  /** Send other bytes than the file's (same length). */
  | { readonly kind: "corrupt" }
  /** Redirect to this path (on the same server, or to a full URL). */
  | { readonly kind: "redirect"; readonly to: string }

export interface Resource {
  readonly content: Uint8Array | { readonly file: string; readonly size: number }
  readonly etag?: string | false
  readonly lastModified?: string | false
  /** No Content-Length: the body is sent chunked, its size unknown until it ends. */
  readonly chunked?: boolean
}

export interface RequestLog {
  readonly path: string
  readonly range: string | undefined
  readonly ifRange: string | undefined
  readonly ifNoneMatch: string | undefined
  readonly authorization: string | undefined
  readonly status: number
  readonly bytes: number
}

export interface Options {
  /** Every response ignores Range and sends the whole body (200). */
  ignoreRange?: boolean
  /**
   * Range is honoured but If-Range ignored, as simple static servers and some
   * proxies do: a resume gets a 206 of whatever version is there now.
   */
  ignoreIfRange?: boolean
  /**
   * A 206 holds at most this many bytes, whatever range was asked for, as
   * RFC 9110 allows (servers and CDNs that cap each answer): the client asks
   * again for the rest.
   */
  maxRangeLength?: number
  /** Requests must carry this Authorization header: 401 without one, 403 with a wrong one. */
  authorization?: string
  /** Bytes per write of a body, and a pause between writes (to make a transfer slow enough to interrupt). */
  chunkSize?: number
  delayMs?: number
  /** Serve HTTPS with this key and certificate (PEM). */
  tls?: { readonly key: string; readonly cert: string }
}

export class TestHttpServer {
  readonly resources = new Map<string, Resource>()
  readonly faults = new Map<string, Array<Fault>>()
  readonly log: Array<RequestLog> = []
  readonly options: Options
  private readonly server: http.Server | https.Server
  private readonly sockets = new Set<import("node:net").Socket>()

  constructor(options: Options = {}) {
    this.options = options
    this.server = options.tls === undefined
      ? http.createServer((req, res) => this.handle(req, res))
      : https.createServer({ key: options.tls.key, cert: options.tls.cert }, (req, res) => this.handle(req, res))
    this.server.on(this.options.tls === undefined ? "connection" : "secureConnection", (socket) => {
      this.sockets.add(socket)
      socket.on("close", () => this.sockets.delete(socket))
    })
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve))
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port
  }

  url(path: string): string {
    return `${this.options.tls === undefined ? "http" : "https"}://127.0.0.1:${this.port}${path}`
  }

  /** Serves `content` at `path`; its ETag is derived from the content unless given. */
  put(path: string, content: Resource["content"], extra: Omit<Resource, "content"> = {}): void {
    this.resources.set(path, { content, ...extra })
  }

  fault(path: string, ...faults: Array<Fault>): void {
    this.faults.set(path, [...(this.faults.get(path) ?? []), ...faults])
  }

  requests(path: string): Array<RequestLog> {
    return this.log.filter((entry) => entry.path === path)
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = new URL(req.url ?? "/", "http://x").pathname
    const entry: { -readonly [K in keyof RequestLog]: RequestLog[K] } = {
      path,
      range: req.headers.range,
      ifRange: req.headers["if-range"] as string | undefined,
      ifNoneMatch: req.headers["if-none-match"],
      authorization: req.headers.authorization,
      status: 0,
      bytes: 0
    }
    this.log.push(entry)
    const respond = (status: number, headers: http.OutgoingHttpHeaders = {}) => {
      entry.status = status
      res.writeHead(status, headers)
    }
    if (this.options.authorization !== undefined && req.headers.authorization !== this.options.authorization) {
      respond(req.headers.authorization === undefined ? 401 : 403)
      res.end()
      return
    }
    const fault = this.faults.get(path)?.shift()
    if (fault?.kind === "status") {
      respond(fault.status, fault.retryAfter === undefined ? {} : { "retry-after": fault.retryAfter })
      res.end()
      return
    }
    if (fault?.kind === "redirect") {
      respond(302, { location: fault.to })
      res.end()
      return
    }
    const resource = this.resources.get(path)
    if (resource === undefined) {
      respond(404)
      res.end()
      return
    }
    const size = resource.content instanceof Uint8Array ? resource.content.byteLength : resource.content.size
    const etag = resource.etag === false ? undefined : resource.etag ?? `"${size}-${this.digest(resource)}"`
    const lastModified = resource.lastModified === false ? undefined : resource.lastModified
    const validators: http.OutgoingHttpHeaders = {
      ...(etag === undefined ? {} : { etag }),
      ...(lastModified === undefined ? {} : { "last-modified": lastModified })
    }
    if (etag !== undefined && req.headers["if-none-match"] === etag) {
      respond(304, validators)
      res.end()
      return
    }
    // One range, "bytes=N-" or "bytes=N-M", answered with 206 (as nginx does, "bytes=0-…" included).
    let start = 0
    let end = size
    let ranged = false
    const rangeHeader = req.headers.range
    const ifRange = req.headers["if-range"]
    const rangeApplies = rangeHeader !== undefined && !this.options.ignoreRange &&
      (this.options.ignoreIfRange || ifRange === undefined || ifRange === etag || ifRange === lastModified)
    if (rangeApplies) {
      const match = /^bytes=(\d+)-(\d*)$/.exec(rangeHeader)
      if (match !== null) {
        start = Number(match[1])
        end = match[2] === "" ? size : Math.min(size, Number(match[2]) + 1)
        if (this.options.maxRangeLength !== undefined) end = Math.min(end, start + this.options.maxRangeLength)
        ranged = true
      }
      if (start >= size) {
        respond(416, { "content-range": `bytes */${size}` })
        res.end()
        return
      }
    }
    const length = end - start
    const announced = fault?.kind === "wrongLength" ? length + 100 : length
    respond(ranged ? 206 : 200, {
      ...validators,
      ...(resource.chunked ? {} : { "content-length": announced }),
      "accept-ranges": "bytes",
      ...(ranged ? { "content-range": `bytes ${start}-${end - 1}/${size}` } : {})
    })
    const limit = fault?.kind === "drop" || fault?.kind === "stall" ? fault.after : Infinity
    this.send(res, resource, start, end, limit, fault, entry)
  }

  private send(
    res: http.ServerResponse,
    resource: Resource,
    start: number,
    end: number,
    limit: number,
    fault: Fault | undefined,
    entry: { bytes: number }
  ): void {
    const chunkSize = this.options.chunkSize ?? 256 * 1024
    const fd = resource.content instanceof Uint8Array ? undefined : fs.openSync(resource.content.file, "r")
    const closeFd = () => fd !== undefined && fs.closeSync(fd)
    let offset = start
    const next = () => {
      if (res.destroyed) return closeFd()
      if (entry.bytes >= limit) {
        closeFd()
        // The connection drops a moment after the last bytes have left this process (as on a real
        // network), so that the client has them, and a resume starts where they end even on a loaded
        // machine (a destroy while they are still buffered here would lose some).
        if (fault?.kind === "drop") {
          const dropWhenSent = () =>
            (res.socket?.writableLength ?? 0) > 0 ? setTimeout(dropWhenSent, 10) : setTimeout(() => res.destroy(), 50)
          dropWhenSent()
        }
        return // stall: the socket stays open and silent
      }
      if (offset >= end) {
        closeFd()
        // A body shorter than announced: the connection closes without the missing bytes.
        if (fault?.kind === "wrongLength") res.end(() => res.socket?.destroy())
        else res.end()
        return
      }
      const size = Math.min(chunkSize, end - offset, limit - entry.bytes)
      let chunk: Uint8Array
      if (resource.content instanceof Uint8Array) {
        chunk = resource.content.subarray(offset, offset + size)
      } else {
        chunk = Buffer.allocUnsafe(size)
        fs.readSync(fd!, chunk, 0, size, offset)
      }
      if (fault?.kind === "corrupt") chunk = Uint8Array.from(chunk, (byte) => byte ^ 0xff)
      offset += size
      entry.bytes += size
      const ok = res.write(chunk)
      const delay = this.options.delayMs ?? 0
      const go = () => (delay > 0 ? setTimeout(next, delay) : setImmediate(next))
      if (ok) go()
      else res.once("drain", go)
    }
    next()
  }

  private readonly digests = new WeakMap<Resource, string>()
  private digest(resource: Resource): string {
    let digest = this.digests.get(resource)
    if (digest === undefined) {
      digest = resource.content instanceof Uint8Array
        ? crypto.createHash("sha256").update(resource.content).digest("hex").slice(0, 16)
        : String(fs.statSync(resource.content.file).mtimeMs)
      this.digests.set(resource, digest)
    }
    return digest
  }
}

/** The server as a scoped resource: listening when acquired, closed when the scope closes. */
export const make = (options?: Options): Effect.Effect<TestHttpServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const server = new TestHttpServer(options)
      await server.listen()
      return server
    }),
    (server) => Effect.promise(() => server.close())
  )

export const sha256 = (bytes: Uint8Array): string => crypto.createHash("sha256").update(bytes).digest("hex")
