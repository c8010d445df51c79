"""Real-looking manual chunks (the shapes the chunker produces) shared by the grounding tests."""

from __future__ import annotations

ALARM_E203 = (
    "Alarm E203: hydraulic pressure low. The press stops immediately when the system pressure at "
    "PT-101 stays below 160 bar for more than 2 s. Check the pump, the oil level and the pressure "
    "filter clogging indicator. Replace the return filter element HF-2231-10 every 2000 operating "
    "hours. Acknowledge with RESET after the cause is removed."
)

FILTER_PROCEDURE = """### 3.3 Replacing the pressure filter element HF-2231-B

1. Lock out the press as in 1.2 and make sure PG-1 reads 0 bar.
2. Place a drip tray under the filter housing FH-1 (right side of the HPU).
3. Unscrew the filter bowl counter-clockwise (36 mm spanner), let the oil drain.
4. Remove the element HF-2231-B (10 µm, glass fibre) and check the old element for metal
   particles. Bright steel or bronze particles point to pump wear: report them.
5. Replace the bowl O-ring OR-85x3 (included in the filter kit), fit the new element, screw the
   bowl back hand-tight plus a quarter turn (torque 40 Nm).
6. Remove the locks, start the pump, bleed the filter housing with screw B1 and check for leaks.
7. Reset the clogging indicator and record the change in the maintenance log."""

TECHNICAL_DATA = """## 2 Technical data

| Item | Value |
| --- | --- |
| Nominal force | 2 500 kN (250 t) |
| Maximum system pressure | 210 bar |
| Normal working pressure | 180-200 bar |
| Pressure relief valve setting (V3) | 225 bar |
| Tank volume | 400 l |
| Normal oil temperature | 35-55 °C |"""

E305_CAUSES = """Meaning: tank temperature TT-101 is above 65 °C. The press finishes the current
cycle and stops. Above 70 °C the pump is switched off.

Causes:
- Oil cooler fouled (air side dusty) or cooler fan not running (check fuse F21).
- Cooling water valve closed (water-cooled version only).
- Relief valve V3 leaking internally: oil is throttled to the tank and heats up.

Actions:
1. Let the press cool down with the pump running in idle (do not switch off a hot pump abruptly
   if it can be avoided).
2. Clean the cooler fins with compressed air from the inside out (press locked out)."""

BROKER_CONFIG = (
    "The broker reads /etc/mosquitto/mosquitto.conf and every file in /etc/mosquitto/conf.d at "
    "start-up, e.g. the listener settings. Set max_inflight_messages to 20 (approx. 2x the "
    "number of PLCs) and persistence_location to /var/lib/mosquitto. Version 2.0.18 listens on "
    "port 1883 by default; see Fig. 3 and No. 7 of the checklist. Restart the service with "
    "systemctl restart mosquitto."
)

SAFETY = (
    "Never work under the upper platen unless it rests on the mechanical safety blocks. "
    "Hydraulic oil escaping under pressure can penetrate the skin: never look for leaks with "
    "your hand, use a piece of cardboard. Open the accumulator dump valve V12 and wait until "
    "gauge PG-1 reads 0 bar."
)

CHUNKS = (ALARM_E203, FILTER_PROCEDURE, TECHNICAL_DATA, E305_CAUSES, BROKER_CONFIG, SAFETY)

QUESTIONS = (
    "What does alarm E203 mean?",
    "How often do I replace the return filter element?",
    "What torque for the filter bowl?",
    "What is the maximum system pressure of P2?",
    "What should I do when the oil temperature is high?",
    "Where is the mosquitto configuration?",
    "Can I look for leaks with my hand?",
    "Which spanner do I need?",
    "What is HF-2231-B?",
    "weather tomorrow",
)
