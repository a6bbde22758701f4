-- evaluator_iot's position: every reading inserted before polled_to (by inserted_at, the
-- database's clock) that was committed when the row was written has been evaluated. One
-- row; the evaluator resumes from it after any downtime (minus its 60 s overlap, for rows
-- whose transactions committed late), so readings stored while it was down are evaluated.
CREATE TABLE IF NOT EXISTS evaluator_position (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    polled_to  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
