/** The exit statuses every command shares (printed by each --help and the README). */
export const EXIT_CODES =
  'Exit status: 0 done · 1 error before or outside a migration · 2 bad usage · 3 rolled back (the guest runs on the source) · 4 in doubt (PRESYNC_ERR_HANDOVER_IN_DOUBT: check the target)\n';
