// The benchmark's HTTP server when nginx is not installed: the tests' server,
// in a process of its own, serving every file of a folder (and its sub-folders)
// from disk. Prints {"base": "http://127.0.0.1:PORT"}; runs until killed.
import * as fs from "node:fs"
import * as path from "node:path"
import { TestHttpServer } from "../test/servers/http.js"

const [folder] = process.argv.slice(2) as [string]
const server = new TestHttpServer({ chunkSize: 1024 * 1024 })
const walk = (dir: string): void => {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name)
    if (entry.isDirectory()) walk(file)
    else server.put(`/${path.relative(folder, file).split(path.sep).join("/")}`, { file, size: fs.statSync(file).size })
  }
}
walk(folder)
await server.listen()
console.log(JSON.stringify({ base: server.url("/").replace(/\/$/, "") }))
