interface Props {
  /** 0–100, or null when unknown (an indeterminate bar). */
  value: number | null;
  label: string;
  state?: string;
  testId?: string;
}

export function ProgressBar({ value, label, state, testId = "progress" }: Props) {
  const clamped = value == null ? null : Math.max(0, Math.min(100, value));
  return (
    <div
      className="progress"
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={clamped == null ? undefined : Math.round(clamped)}
      aria-valuetext={clamped == null ? "In progress" : `${Math.round(clamped)}%`}
      data-testid={testId}
      data-state={state}
      data-indeterminate={clamped == null ? "true" : undefined}
    >
      <div className="progress__bar" style={{ width: `${clamped ?? 30}%` }} />
    </div>
  );
}
