declare module "s3rver" {
  import type * as http from "node:http"
  interface Options {
    port?: number
    address?: string
    silent?: boolean
    directory: string
    configureBuckets?: ReadonlyArray<{ name: string; configs?: ReadonlyArray<unknown> }>
    vhostBuckets?: boolean
  }
  export default class S3rver {
    constructor(options: Options)
    run(): Promise<{ address: string; port: number }>
    close(): Promise<void>
    httpServer: http.Server
  }
}
