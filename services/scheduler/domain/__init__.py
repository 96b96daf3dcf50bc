"""The scheduler's pure rules: no Redis, no Kafka, no I/O; values in, values out.

- `clinic`: the clinic's configuration (hours, therapists, rooms, closures, course policy);
- `course`: a course's steps in order, and a session placed in time;
- `spans`: arithmetic on sorted, disjoint spans of UTC epoch seconds;
- `seats`: a therapist, and a room for a dose, for one session on one day;
- `capacity`: quick necessary tests (are there days enough?) before walking a course;
- `walk`: walking a course's steps, each at its earliest allowed day and time;
- `plans`: what the planner reads and answers (bookings, slots, plans, failures);
- `replan`: re-planning what is left of a course after one session changed;
- `ids`: the ids of the events a change of one client's schedule publishes.

Import the modules themselves (`from services.scheduler.domain.clinic import ...`): this
package imports none of them, so importing one loads only what it needs.
"""
