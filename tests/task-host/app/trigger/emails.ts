import { logger, task } from "@trigger.dev/sdk/v3";
import pg from "pg";

/** The shape of Supermark's `send-dataroom-trial-expired-email`: read the
 * app's database, record what was done, then send an e-mail through the
 * app's mail service; a mail failure is logged, not thrown. */
export const trialExpired = task({
  id: "host.send-trial-expired-email",
  retry: { maxAttempts: 1 },
  run: async (payload: { teamId: string }) => {
    const db = new pg.Client({ connectionString: process.env.APP_DATABASE_URL });
    await db.connect();
    try {
      const { rows } = await db.query('SELECT name, email FROM "Team" WHERE id = $1', [payload.teamId]);
      if (rows.length === 0) {
        logger.info("team not found", { teamId: payload.teamId });
        return { sent: false, reason: "team not found" };
      }
      await db.query('UPDATE "Team" SET "trialEndedNotifiedAt" = now() WHERE id = $1', [payload.teamId]);
      let sent = false;
      try {
        const response = await fetch(`${process.env.APP_MAIL_URL}/emails`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ to: rows[0].email, subject: `${rows[0].name}: your data room trial has ended` }),
        });
        sent = response.ok;
        if (!response.ok) logger.warn("the trial e-mail was not sent", { status: response.status });
      } catch (error) {
        logger.error("the trial e-mail failed", { error: String(error) });
      }
      return { sent };
    } finally {
      await db.end();
    }
  },
});
