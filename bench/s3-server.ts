// The benchmark's S3 server (s3rver), in a process of its own (started with
// --openssl-legacy-provider). Prints its endpoint; runs until killed.
import S3rver from "s3rver"

const [directory] = process.argv.slice(2) as [string]
const server = new S3rver({
  port: 0,
  address: "127.0.0.1",
  silent: true,
  directory,
  configureBuckets: [{ name: "bench" }],
  vhostBuckets: false
})
const { port } = await server.run()
console.log(JSON.stringify({ endpoint: `http://127.0.0.1:${port}` }))
