/**
 * A real forward proxy on 127.0.0.1 for the tests, as companies run them:
 * plain HTTP requests in absolute form (`GET http://host/path`) are forwarded,
 * HTTPS goes through a CONNECT tunnel. It records what it was asked for, and
 * can require a Proxy-Authorization.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as http from "node:http"
import * as net from "node:net"
import type { AddressInfo } from "node:net"

export interface ProxyLog {
  readonly method: string
  /** The absolute URL (forwarded requests) or host:port (CONNECT). */
  readonly target: string
  readonly authorization: string | undefined
}

export class TestProxy {
  readonly log: Array<ProxyLog> = []
  private readonly server: http.Server
  private readonly sockets = new Set<net.Socket>()

  constructor(readonly authorization?: string) {
    this.server = http.createServer((req, res) => {
      this.log.push({ method: req.method ?? "", target: req.url ?? "", authorization: req.headers["proxy-authorization"] })
      if (!this.allowed(req)) {
        res.writeHead(407, { "proxy-authenticate": "Basic" }).end()
        return
      }
      let target: URL
      try {
        target = new URL(req.url ?? "")
      } catch {
        res.writeHead(400).end("a forward proxy takes absolute URLs")
        return
      }
      const headers = { ...req.headers }
      delete headers["proxy-authorization"]
      const upstream = http.request(
        { host: target.hostname, port: target.port || 80, path: `${target.pathname}${target.search}`, method: req.method, headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers)
          answer.pipe(res)
        }
      )
      upstream.on("error", () => res.destroy())
      req.pipe(upstream)
    })
    this.server.on("connect", (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
      this.log.push({ method: "CONNECT", target: req.url ?? "", authorization: req.headers["proxy-authorization"] })
      if (!this.allowed(req)) {
        client.end("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
        return
      }
      const [host, port] = (req.url ?? "").split(/:(?=\d+$)/)
      const upstream = net.connect({ host: host!.replace(/^\[|\]$/g, ""), port: Number(port) }, () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n")
        upstream.write(head)
        upstream.pipe(client)
        client.pipe(upstream)
      })
      upstream.on("error", () => client.destroy())
      client.on("error", () => upstream.destroy())
    })
    this.server.on("connection", (socket) => {
      this.sockets.add(socket)
      socket.on("close", () => this.sockets.delete(socket))
    })
  }

  private allowed(req: http.IncomingMessage): boolean {
    return this.authorization === undefined || req.headers["proxy-authorization"] === this.authorization
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve))
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** The proxy as a scoped resource. */
export const make = (authorization?: string): Effect.Effect<TestProxy, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const proxy = new TestProxy(authorization)
      await proxy.listen()
      return proxy
    }),
    (proxy) => Effect.promise(() => proxy.close())
  )
