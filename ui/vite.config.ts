/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// `npm run dev` proxies the API to a head on this machine (`flotilla up`), so the dashboard
// can be worked on with hot reload against a real cluster.
export default defineConfig({
  plugins: [svelte()],
  build: {
    target: "es2022",
    assetsDir: "assets",
    sourcemap: false,
  },
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:7471", changeOrigin: false },
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
  },
});
