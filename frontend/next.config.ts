import type { NextConfig } from "next";

// Exported as static files (frontend/out) that the gateway serves at /. Pages are static routes only;
// anything per video travels in the query string (/watch?v=<id>), which a static export needs no build for.
const nextConfig: NextConfig = {
  output: "export",
  trailingSlash: false,
  images: { unoptimized: true },
  poweredByHeader: false,
  reactStrictMode: true,
  productionBrowserSourceMaps: false,
};

export default nextConfig;
