// Types for the type check only (tsc, see tsconfig.json); never loaded by the browser.
// The synced traits of each widget, as declared with `.tag(sync=True)` in nbchat/notebook/.
import type { AnyModel, AnyWidget } from "@anywidget/types";

export type { AnyModel, AnyWidget };

/** ChatPanel's traits (nbchat/notebook/panel.py). */
export interface PanelState {
  model: string;
  /** the model picker's rows (nbchat.notebook.panel.model_catalog) */
  catalog: CatalogRow[];
  /** whether the last "New chat" can be undone */
  can_undo: boolean;
  system: string;
  temperature: number | null;
  max_tokens: number | null;
  /** one per option control, from the options' declaration (panel.CONTROLS) */
  controls: ControlSpec[];
  busy: boolean;
  /** what the running turn waits for ("waiting for cerebras, 12 s"), "" when nothing */
  status: string;
  /** {role: "user" | "assistant" | "error", text, images?, model?, badge?, interrupted?,
   *  reasoning?, note?} */
  transcript: Record<string, any>[];
}

/** One model in the picker: key status from nbchat's credentials resolution (never the key),
 *  capabilities from the provider's table (null: not known). */
export interface CatalogRow {
  id: string;
  provider: string;
  ready: boolean;
  key: "ready" | "missing" | "error";
  /** what to set, or "key set" / "no key needed" */
  hint: string;
  vision: boolean | null;
  tools: boolean | null;
  description: string;
}

/** An option control's spec (nbchat.core.options.control_spec); its value is the trait `name`. */
export interface ControlSpec {
  name: "temperature" | "max_tokens";
  label: string;
  type: "number" | "integer";
  /** null: unbounded */
  min: number | null;
  max: number | null;
  step: number | null;
  description: string;
}

/** CompareView's traits (nbchat/notebook/compare.py). */
export interface CompareState {
  prompt: string;
  /** {model, state: "waiting" | "streaming" | "done" | ..., text, images?, error?, stats?} */
  columns: Record<string, any>[];
}
