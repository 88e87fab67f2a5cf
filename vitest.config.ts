import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Fixtures are test files that other tests run on their own (and expect to fail).
    exclude: [...configDefaults.exclude, "test/fixtures/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // s3rver (the S3 test server) pages listings with a DES cipher, which
    // OpenSSL 3 only offers through its legacy provider.
    poolOptions: { forks: { execArgv: ["--openssl-legacy-provider"] } },
    // The test servers' own AWS SDK clients: no Node-version notice in the output.
    // No instance-metadata requests from the SDK, ever (no traffic off loopback).
    // No proxy of the machine running the tests either: the tests that use one start their own.
    env: {
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      AWS_EC2_METADATA_DISABLED: "true",
      HTTP_PROXY: "",
      HTTPS_PROXY: "",
      http_proxy: "",
      https_proxy: ""
    }
  }
})
