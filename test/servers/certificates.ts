/**
 * Certificates the tests make with openssl: a CA of their own (a company's,
 * say) and a server certificate it signs for 127.0.0.1 and localhost.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface Certificates {
  /** The CA's certificate (PEM), and the file that holds it. */
  readonly ca: string
  readonly caFile: string
  readonly key: string
  readonly cert: string
}

export const make: Effect.Effect<Certificates, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-storage-tls-"))
    const openssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" })
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mlup-storage test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    fs.writeFileSync(path.join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    const read = (name: string) => fs.readFileSync(path.join(dir, name), "utf8")
    return { dir, ca: read("ca.pem"), caFile: path.join(dir, "ca.pem"), key: read("server.key"), cert: read("server.pem") }
  }),
  ({ dir }) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)
