"use client";

import type { ReactNode } from "react";
import { RealtimeProvider } from "@/lib/realtime";
import { UploadProvider } from "@/lib/uploads";

export function Providers({ children }: { children: ReactNode }) {
  return (
    <RealtimeProvider>
      <UploadProvider>{children}</UploadProvider>
    </RealtimeProvider>
  );
}
