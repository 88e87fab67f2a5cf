// The benchmark's HTTP server, in a process of its own so that it does not
// share a thread with the client being measured. Serves one file from disk.
import { TestHttpServer } from "../test/servers/http.js"

const [file] = process.argv.slice(2) as [string]
const fs = await import("node:fs")
const server = new TestHttpServer({ chunkSize: 1024 * 1024 })
server.put("/model.bin", { file, size: fs.statSync(file).size })
await server.listen()
console.log(JSON.stringify({ url: server.url("/model.bin") }))
