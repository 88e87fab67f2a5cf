/**
 * The networks of companies, on Node: proxies (`HTTPS_PROXY`, `HTTP_PROXY`,
 * `NO_PROXY`, either case) and certificate authorities of their own
 * (`ca_bundle`, `SSL_CERT_FILE`, `AWS_CA_BUNDLE`; `NODE_EXTRA_CA_CERTS` is
 * Node's own), as node:http agents that both the HTTP storage's client and
 * the AWS SDK use.
 *
 * @internal
 */
import * as Path from "@effect/platform/Path"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import type { Readable } from "node:stream"
import * as tls from "node:tls"
import * as StorageError from "../StorageError.js"
import * as digests from "./cache/digests.js"
import * as errors from "./errors.js"
import * as transfer from "./transfer.js"

/** @internal */
export interface Settings {
  readonly httpsProxy: URL | undefined
  readonly httpProxy: URL | undefined
  /** NO_PROXY entries, lower case: hosts, `.domain` / `domain` suffixes, `host:port`, `*`. */
  readonly noProxy: ReadonlyArray<string>
  /** Extra certificate authorities (PEM), trusted besides Node's own. */
  readonly ca: ReadonlyArray<string>
  /** Where the extra CAs came from, for messages. */
  readonly caFiles: ReadonlyArray<string>
}

const either = (upper: string) =>
  Config.option(Config.string(upper)).pipe(
    Config.zipWith(Config.option(Config.string(upper.toLowerCase())), (a, b) => Option.orElse(a, () => b)),
    Config.map(Option.filter((value) => value.trim() !== ""))
  )

const proxyUrl = (name: string, value: Option.Option<string>): Effect.Effect<URL | undefined, StorageError.OptionIssue> =>
  Option.match(value, {
    onNone: () => Effect.succeed(undefined),
    onSome: (text) => {
      // "proxy:3128" (no scheme) is http://proxy:3128, as curl reads it.
      const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`
      const problem = (what: string) =>
        Effect.fail(new StorageError.OptionIssue({ field: name, problem: `${what}: ${errors.cap(errors.redactUrl(text))}` }))
      let url: URL
      try {
        url = new URL(withScheme)
      } catch {
        return problem("is not a proxy URL (http://host:port)")
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") return problem("is not a proxy URL (http://host:port)")
      // The credentials are decoded for each request: a stray "%" must fail here, not as a defect later.
      try {
        decodeURIComponent(url.username)
        decodeURIComponent(url.password)
      } catch {
        return problem(`has a user or password that is not percent-encoded (write "%" as %25, "@" as %40, ":" as %3A)`)
      }
      return Effect.succeed(url)
    }
  })

// The bundles read, by path: read again only when the file changed (every load reads SSL_CERT_FILE and
// AWS_CA_BUNDLE, often the system's 200 KB bundle: a watch's check each interval, too).
const bundles = new Map<string, { readonly identity: string; readonly text: string }>()
const readBundle = (file: string): string => {
  const identity = digests.identityOfStats(fs.statSync(file, { bigint: true }))
  const known = bundles.get(file)
  if (known !== undefined && known.identity === identity) return known.text
  const text = fs.readFileSync(file, "utf8")
  bundles.set(file, { identity, text })
  return text
}

/**
 * Reads a CA bundle (PEM): a missing or unreadable file, or one with no
 * certificate, is an invalid option naming the field and the file. A file
 * read before is read again only when it changed.
 *
 * @internal
 */
export const readCaBundle = (
  field: string,
  file: string,
  storageType: string
): Effect.Effect<string, StorageError.InvalidStorageOptions> =>
  Effect.try({
    try: () => readBundle(file),
    catch: (cause) => (cause as { code?: string }).code ?? "unreadable"
  }).pipe(
    Effect.filterOrFail((text) => text.includes("-----BEGIN CERTIFICATE-----"), () => "holds no PEM certificate"),
    Effect.mapError((problem) =>
      new StorageError.InvalidStorageOptions({
        storageType,
        issues: [
          new StorageError.OptionIssue({
            field,
            problem: `${file}: ${problem === "ENOENT" ? "no such file" : problem}`
          })
        ]
      })
    )
  )

/**
 * The CAs of a storage's `ca_bundle` option (none when it is not given), its
 * path resolved from the working folder: trusted beside the system's and
 * `NODE_EXTRA_CA_CERTS`'s.
 *
 * @internal
 */
export const caBundleOf = (
  caBundle: string | undefined,
  storageType: string
): Effect.Effect<Array<string>, StorageError.InvalidStorageOptions, Path.Path> =>
  caBundle === undefined
    ? Effect.succeed([])
    : Effect.flatMap(Path.Path, (path) =>
      Effect.map(readCaBundle("ca_bundle", path.resolve(caBundle), storageType), (pem) => [pem]))

/**
 * The network settings from the environment (through Effect's `Config`). A
 * malformed value is an invalid option of the storage, naming the variable.
 *
 * @internal
 */
export const settings = (storageType: string): Effect.Effect<Settings, StorageError.InvalidStorageOptions> =>
  Effect.gen(function*() {
    // An unreadable variable counts as unset.
    const read = (config: Config.Config<Option.Option<string>>) => Effect.orElseSucceed(config, () => Option.none<string>())
    const httpsProxy = yield* proxyUrl("HTTPS_PROXY", yield* read(either("HTTPS_PROXY")))
    const httpProxy = yield* proxyUrl("HTTP_PROXY", yield* read(either("HTTP_PROXY")))
    const noProxy = Option.match(yield* read(either("NO_PROXY")), {
      onNone: () => [],
      onSome: (text) => text.split(/[\s,]+/).map((entry) => entry.trim().toLowerCase()).filter((entry) => entry !== "")
    })
    const caFiles: Array<string> = []
    const ca: Array<string> = []
    for (const name of ["SSL_CERT_FILE", "AWS_CA_BUNDLE"]) {
      const file = yield* read(Config.option(Config.string(name)))
      if (Option.isNone(file) || file.value === "") continue
      caFiles.push(file.value)
      ca.push(yield* Effect.mapError(readCaBundle(name, file.value, storageType), (error) => error.issues[0]!))
    }
    return { httpsProxy, httpProxy, noProxy, ca, caFiles }
  }).pipe(
    Effect.mapError((issue) =>
      issue instanceof StorageError.InvalidStorageOptions
        ? issue
        : new StorageError.InvalidStorageOptions({ storageType, issues: [issue] })
    )
  )

/**
 * Whether NO_PROXY exempts a host (and port): `*`, the host itself,
 * `host:port`, or a domain suffix (`.example.com` or `example.com`).
 *
 * @internal
 */
export const bypasses = (noProxy: ReadonlyArray<string>, host: string, port: string): boolean => {
  const name = host.toLowerCase().replace(/^\[|\]$/g, "")
  return noProxy.some((entry) => {
    if (entry === "*") return true
    const [entryHost, entryPort] = entry.startsWith("[")
      ? [entry.slice(1, entry.indexOf("]")), entry.slice(entry.indexOf("]") + 2) || undefined]
      : entry.split(":") as [string, string | undefined]
    if (entryPort !== undefined && entryPort !== port) return false
    const suffix = entryHost!.replace(/^\*?\./, "")
    return name === suffix || name.endsWith(`.${suffix}`)
  })
}

/**
 * The proxy for a URL, or none (no proxy set for its scheme, or NO_PROXY).
 *
 * @internal
 */
export const proxyFor = (settings: Settings, target: URL): URL | undefined => {
  const proxy = target.protocol === "https:" ? settings.httpsProxy : settings.httpProxy
  if (proxy === undefined) return undefined
  const port = target.port || (target.protocol === "https:" ? "443" : "80")
  return bypasses(settings.noProxy, target.hostname, port) ? undefined : proxy
}

const proxyAuthorization = (proxy: URL): Record<string, string> =>
  proxy.username === ""
    ? {}
    : {
      "proxy-authorization": `Basic ${
        Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString("base64")
      }`
    }

const connectToProxy = (proxy: URL): net.Socket => {
  const port = Number(proxy.port || (proxy.protocol === "https:" ? 443 : 80))
  const socket = proxy.protocol === "https:"
    ? tls.connect({ host: proxy.hostname, port, servername: proxy.hostname })
    : net.connect({ host: proxy.hostname, port })
  return socket
}

/**
 * An https.Agent that tunnels through the proxy with CONNECT (TLS to the
 * target inside the tunnel), with the extra CAs, keep-alive on.
 */
class HttpsAgent extends https.Agent {
  constructor(private readonly settings: Settings, options: https.AgentOptions) {
    super(options)
  }
  override createConnection(options: any, callback?: (error: Error | null, socket: any) => void): any {
    const host: string = options.host ?? options.hostname ?? "localhost"
    const port = String(options.port ?? 443)
    const proxy = proxyFor(this.settings, new URL(`https://${host.includes(":") ? `[${host}]` : host}:${port}`))
    if (proxy === undefined) return (https.Agent.prototype as any).createConnection.call(this, options, callback)
    const request = http.request({
      host: proxy.hostname,
      port: Number(proxy.port || (proxy.protocol === "https:" ? 443 : 80)),
      method: "CONNECT",
      path: `${host}:${port}`,
      headers: { host: `${host}:${port}`, ...proxyAuthorization(proxy) },
      createConnection: () => connectToProxy(proxy)
    })
    request.once("connect", (response, socket) => {
      if (response.statusCode !== 200) {
        socket.destroy()
        callback?.(
          Object.assign(
            new Error(
              `the proxy ${errors.redactUrl(proxy.href)} refused the tunnel to ${host}:${port} (HTTP ${response.statusCode})`
            ),
            { code: "EPROXY", status: response.statusCode, proxy: proxy.href }
          ),
          undefined
        )
        return
      }
      const secure = tls.connect({ ...options, socket, servername: options.servername ?? (net.isIP(host) ? undefined : host) })
      callback?.(null, secure)
    })
    request.once("error", (error) => callback?.(error, undefined))
    request.end()
    return undefined
  }
}

/**
 * An http.Agent that sends requests for proxied hosts to the proxy, in
 * absolute form (`GET http://host/path`), as forward proxies expect.
 */
class HttpAgent extends http.Agent {
  constructor(private readonly settings: Settings, options: http.AgentOptions) {
    super(options)
  }
  private proxyOf(options: { host?: string | null; hostname?: string | null; port?: number | string | null }) {
    const host = options.host ?? options.hostname ?? "localhost"
    const port = String(options.port ?? 80)
    return { proxy: proxyFor(this.settings, new URL(`http://${host.includes(":") ? `[${host}]` : host}:${port}`)), host, port }
  }
  // Called with the request before its first line is written: the path becomes absolute.
  addRequest(request: http.ClientRequest, options: any): void {
    const { host, port, proxy } = this.proxyOf(options)
    if (proxy !== undefined) {
      const hostPart = host.includes(":") ? `[${host}]` : host
      request.path = `http://${hostPart}${port === "80" ? "" : `:${port}`}${request.path}`
      for (const [key, value] of Object.entries(proxyAuthorization(proxy))) request.setHeader(key, value)
    }
    ;(http.Agent.prototype as any).addRequest.call(this, request, options)
  }
  override createConnection(options: any, callback?: (error: Error | null, socket: any) => void): any {
    const { proxy } = this.proxyOf(options)
    if (proxy === undefined) return (http.Agent.prototype as any).createConnection.call(this, options, callback)
    return connectToProxy(proxy)
  }
}

/**
 * node:http agents for the settings (and extra CAs), keep-alive on; destroyed
 * when the scope closes.
 *
 * @internal
 */
export const makeAgents = (
  settings: Settings,
  extraCa: ReadonlyArray<string> = []
): Effect.Effect<{ readonly http: http.Agent; readonly https: https.Agent }, never, Scope.Scope> => {
  const ca = [...settings.ca, ...extraCa]
  return Effect.acquireRelease(
    Effect.sync(() => ({
      http: new HttpAgent(settings, { keepAlive: true }),
      https: new HttpsAgent(settings, {
        keepAlive: true,
        ...(ca.length === 0 ? {} : { ca: [...tls.rootCertificates, ...ca] })
      })
    })),
    (agents) =>
      Effect.sync(() => {
        agents.http.destroy()
        agents.https.destroy()
      })
  )
}

/**
 * node:http agents from the environment's proxies and CAs, plus the extra CAs
 * a storage's `ca_bundle` names; destroyed when the scope closes.
 *
 * @internal
 */
export const agentsFor = (storageType: string, extraCa: ReadonlyArray<string>) =>
  Effect.flatMap(settings(storageType), (settings) => makeAgents(settings, extraCa))

/**
 * What the Node wiring offers the storages: a way to send a GET through
 * agents with the environment's proxies and CAs (plus extra CAs), for one
 * load. Absent on other platforms (where the platform's own client is used).
 *
 * @internal
 */
export class Network extends Context.Tag("mlup-storage/internal/Network")<Network, {
  readonly client: (
    storageType: string,
    extraCa: ReadonlyArray<string>
  ) => Effect.Effect<Send, StorageError.InvalidStorageOptions, Scope.Scope>
}>() {}

/**
 * One answer to a GET, whichever client asked: its status, its headers
 * (lower-case names), and its body, unread.
 *
 * @internal
 */
export interface Answer {
  readonly status: number
  readonly headers: Readonly<Record<string, string | undefined>>
  /** node:http's IncomingMessage (the fast path), or any async iterable of bytes. */
  readonly body: Readable | AsyncIterable<Uint8Array>
  /** Reads the body to its end and drops it: a short one (a 304, a redirect), whose connection is reused. */
  readonly consume: Effect.Effect<void>
  /** Drops the body: on Node its connection is closed at once (the body may be large); nothing once it was read. */
  readonly discard: Effect.Effect<void>
}

/**
 * One GET, one hop (redirects are the caller's): an answer within
 * `timeoutMillis`, or why there was none.
 *
 * @internal
 */
export type Send = (
  url: string,
  headers: Readonly<Record<string, string>>,
  timeoutMillis: number
) => Effect.Effect<Answer, RequestFailure>

/**
 * Sends on these agents with node:http's own request: no per-request
 * machinery of the platform's client (its span, its abort controller and the
 * DOMException each abort makes, its finalization registry). Measured: 2,000
 * conditional GETs took 2,050 ms through @effect/platform's client in a
 * fresh process and 640 ms through node:http on the same keep-alive agent; a
 * cold fetch of 1,000 files of 50 KiB spent 2.3 ms per file in the request.
 *
 * @internal
 */
export const makeSend = (agents: { readonly http: http.Agent; readonly https: https.Agent }): Send =>
(url, headers, timeoutMillis) =>
  Effect.async<Answer, RequestFailure>((resume) => {
    let target: URL
    try {
      target = new URL(url)
    } catch {
      return resume(Effect.fail({ _tag: "Unanswered", reason: "not a URL" }))
    }
    const secure = target.protocol === "https:"
    let done = false
    const finish = (effect: Effect.Effect<Answer, RequestFailure>) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resume(effect)
    }
    const request = (secure ? https : http).request(
      target,
      { method: "GET", headers, agent: secure ? agents.https : agents.http },
      (response) => finish(Effect.succeed(answerOf(response)))
    )
    request.on("error", (error) => {
      finish(Effect.fail(
        refusalOf(error, "") !== undefined
          ? { _tag: "Refused", error }
          : { _tag: "Unanswered", reason: `request failed: ${errors.redactText(String(error.message ?? error))}` }
      ))
    })
    const timer = setTimeout(() => {
      request.destroy()
      finish(Effect.fail({ _tag: "Unanswered", reason: `no response within ${Duration.format(Duration.millis(timeoutMillis))}` }))
    }, timeoutMillis)
    request.end()
    return Effect.sync(() => {
      done = true
      clearTimeout(timer)
      request.destroy()
    })
  })

const answerOf = (response: http.IncomingMessage): Answer => ({
  status: response.statusCode ?? 0,
  headers: response.headers as Record<string, string | undefined>,
  body: response,
  consume: Effect.async<void>((resume) => {
    if (response.readableEnded || response.destroyed) return resume(Effect.void)
    response.once("end", () => resume(Effect.void))
    response.once("close", () => resume(Effect.void))
    response.resume()
    return Effect.sync(() => void response.destroy())
  }),
  discard: Effect.sync(() => {
    if (!response.readableEnded) response.destroy()
  })
})

/** Certificate errors of Node's TLS (OpenSSL's verification codes). */
const tlsCodes = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
  "INVALID_CA"
])

/**
 * A failure that no retry mends, found in an error's cause chain (the one
 * place where the native errors of a connection are read): a certificate that
 * is not accepted, a server that does not speak TLS on the port an https URL
 * names (a plain-HTTP port: OpenSSL's "wrong version number"), and a proxy
 * that refuses its credentials (407 to CONNECT). `undefined` for anything
 * else (worth another attempt).
 *
 * @internal
 */
export const refusalOf = (
  error: unknown,
  location: string
): StorageError.TlsFailure | StorageError.Unauthorized | undefined => {
  let current: unknown = error
  for (let depth = 0; depth < 6 && current !== undefined && current !== null; depth++) {
    const code = (current as { code?: unknown }).code
    const message = String((current as { message?: unknown }).message ?? code)
    if (typeof code === "string" && tlsCodes.has(code)) {
      return new StorageError.TlsFailure({ location, code, reason: errors.redactText(message) })
    }
    if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || (code === "EPROTO" && /wrong version number/i.test(message))) {
      return new StorageError.TlsFailure({
        location,
        code: "ERR_SSL_WRONG_VERSION_NUMBER",
        reason: "the server does not speak TLS on this port (a plain-HTTP port?): use http://, or the port that serves https"
      })
    }
    if (code === "EPROXY" && (current as { status?: unknown }).status === 407) {
      return proxyRefused(location, (current as { proxy: string }).proxy)
    }
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

/**
 * A proxy that refused its credentials (407): one error, whether it answered
 * a CONNECT (https) or a plain request (http), and whichever source asked.
 *
 * @internal
 */
export const proxyRefused = (location: string, proxy?: string) =>
  new StorageError.Unauthorized({
    location,
    status: 407,
    reason: `the proxy${proxy === undefined ? "" : ` ${errors.cap(errors.redactUrl(proxy))}`} refused its credentials: ` +
      "check the user and password in HTTPS_PROXY / HTTP_PROXY (http://user:password@host:port, percent-encoded)"
  })

/**
 * A remote source's failure as the library's error, by its HTTP status: one
 * rule for every source. A certificate or a proxy the client refuses
 * (`cause`), 407 (the proxy's credentials), 401/403 `Unauthorized` (with the
 * source's `unauthorized` reason: what to give), 404, 410 (or `notFound`,
 * the source's own code for it) `RemoteNotFound`, 408, 429, 5xx and no status
 * at all (a transport failure) retried (waiting at least `retryAfter`), any
 * other status `RequestRejected`.
 *
 * @internal
 */
export const failureOf = (options: {
  readonly location: string
  readonly status: number | undefined
  /** What the source said (else "HTTP <status>"). */
  readonly reason?: string | undefined
  readonly cause?: unknown
  readonly unauthorized?: string | undefined
  readonly notFound?: boolean | undefined
  readonly retryAfter?: { readonly retryAfter?: number; readonly retryAt?: number } | undefined
}): StorageError.StorageError | transfer.Retryable => {
  const { location, reason, status } = options
  const refused = options.cause === undefined ? undefined : refusalOf(options.cause, location)
  if (refused !== undefined) return refused
  if (status === 407) return proxyRefused(location)
  if (status === 401 || status === 403) {
    const why = options.unauthorized ?? reason
    return new StorageError.Unauthorized({ location, status, ...(why === undefined ? {} : { reason: why }) })
  }
  if (status === 404 || status === 410 || options.notFound === true) {
    return new StorageError.RemoteNotFound({
      location,
      ...(status === undefined ? {} : { status }),
      ...(reason === undefined ? {} : { reason })
    })
  }
  if (status !== undefined && status < 500 && status !== 408 && status !== 429) {
    return new StorageError.RequestRejected({ location, status, reason: reason ?? `unexpected HTTP ${status}` })
  }
  return new transfer.Retryable({
    reason: reason ?? `HTTP ${status}`,
    ...(status === undefined ? {} : { status }),
    ...options.retryAfter
  })
}

/**
 * A failure to get an answer (no connection, no headers in time): worth
 * another attempt, unless no attempt can mend it (`Refused`: its error, for
 * `refusalOf` with the caller's location).
 *
 * @internal
 */
export type RequestFailure =
  | { readonly _tag: "Unanswered"; readonly reason: string }
  | { readonly _tag: "Refused"; readonly error: unknown }

/**
 * One GET through the agents (proxies, CAs, keep-alive), redirects followed
 * (at most `maxRedirects`). `headers` go to every hop; `secret` headers
 * (a token) only to hops on the first URL's origin, never to a CDN another
 * origin serves. Succeeds with the final answer (its body unread: the
 * caller reads or drops it) and the final URL; the answer is destroyed when
 * the scope closes.
 *
 * @internal
 */
export const get = (
  agents: { readonly http: http.Agent; readonly https: https.Agent },
  url: string,
  options: {
    readonly headers: Readonly<Record<string, string>>
    readonly secret: Readonly<Record<string, string>>
    readonly timeoutMillis: number
    readonly maxRedirects?: number | undefined
  }
): Effect.Effect<
  { readonly response: http.IncomingMessage; readonly url: string },
  RequestFailure,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const origin = new URL(url).origin
    const send = makeSend(agents)
    const once = (target: URL) =>
      Effect.acquireRelease(
        Effect.map(
          send(target.href, { ...options.headers, ...(target.origin === origin ? options.secret : {}) }, options.timeoutMillis),
          (answer) => answer.body as http.IncomingMessage
        ),
        (response) => Effect.sync(() => response.destroy())
      )
    let target = new URL(url)
    let response = yield* once(target)
    const limit = options.maxRedirects ?? 10
    for (let hops = 0; [301, 302, 303, 307, 308].includes(response.statusCode ?? 0) && response.headers.location; hops++) {
      if (hops === limit) return yield* Effect.fail<RequestFailure>({ _tag: "Unanswered", reason: `more than ${limit} redirects` })
      target = new URL(response.headers.location, target)
      response.resume()
      response = yield* once(target)
    }
    return { response, url: target.href }
  })

/**
 * A failure to get an answer as the error a load fails (or retries) with: a
 * refusal no attempt mends (TLS, a proxy's), else another attempt.
 *
 * @internal
 */
export const fromRequestFailure = (location: string) => (failure: RequestFailure) =>
  failure._tag === "Refused"
    ? refusalOf(failure.error, location) ?? new transfer.Retryable({ reason: String(failure.error) })
    : new transfer.Retryable({ reason: failure.reason })

/**
 * A body read whole (an API's JSON, a manifest), up to `limit` bytes ("too
 * large" beyond); a body cut off is worth another attempt. Interrupted: the
 * answer is dropped.
 *
 * @internal
 */
export const readText = (response: http.IncomingMessage, limit: number) =>
  Effect.async<string, transfer.Retryable | "too large">((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    response.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        response.destroy()
        resume(Effect.fail("too large"))
      } else chunks.push(chunk)
    })
    response.on("end", () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8"))))
    response.on("error", (error) => resume(Effect.fail(new transfer.Retryable({ reason: `the answer was cut off: ${error.message}` }))))
    return Effect.sync(() => response.destroy())
  })
