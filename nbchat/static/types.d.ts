// Types for the type check only (tsc, see tsconfig.json); never loaded by the browser.
// The synced traits of each widget, as declared with `.tag(sync=True)` in nbchat/notebook/.
import type { AnyModel, AnyWidget } from "@anywidget/types";

export type { AnyModel, AnyWidget };

/** ChatPanel's traits (nbchat/notebook/panel.py). */
export interface PanelState {
  model: string;
  models: string[];
  system: string;
  temperature: number | null;
  max_tokens: number | null;
  busy: boolean;
  /** {role: "user" | "assistant" | "error", text, images?, model?, badge?, interrupted?} */
  transcript: Record<string, any>[];
}

/** CompareView's traits (nbchat/notebook/compare.py). */
export interface CompareState {
  prompt: string;
  /** {model, state: "waiting" | "streaming" | "done" | ..., text, images?, error?, stats?} */
  columns: Record<string, any>[];
}
