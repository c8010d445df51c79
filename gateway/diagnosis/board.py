"""The current alarm state of every device, which decides what the per-device topic carries.

Several alarms can be active on one device, but `edge/{site}/diagnosis/{device_id}` holds one
retained message. It carries the *headline*: the most severe active alarm (ties: the most recent
one). Every alarm also has its own retained topic `.../{device_id}/{code}`, so nothing is hidden.
When the last active alarm clears, the device topic carries that cleared state.

Every instance keeps the board of every device: its own diagnoses and, through the bus, those
the other instances publish (`DiagnosisService.on_mirror`); at start the broker's retained
per-alarm diagnoses rebuild it. So whichever instance owns a device now (ownership.py) computes
the headline from all of its active alarms.

Bounded: at most `max_devices` devices (least recently changed evicted) and
`max_alarms_per_device` alarms each (cleared ones dropped first, then the oldest).
"""

from __future__ import annotations

from collections import OrderedDict

from models.diagnosis import Diagnosis, DiagnosisState


class AlarmBoard:
    def __init__(self, *, max_devices: int, max_alarms_per_device: int) -> None:
        self._max_devices = max_devices
        self._max_alarms = max_alarms_per_device
        self._devices: OrderedDict[str, OrderedDict[str, Diagnosis]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, device_id: str, code: str) -> Diagnosis | None:
        alarms = self._devices.get(device_id)
        return alarms.get(code) if alarms is not None else None

    def update(self, diagnosis: Diagnosis) -> Diagnosis:
        """Record a diagnosis (active or cleared); returns the device's new headline.

        An older diagnosis of an alarm than the one on the board changes nothing: instances
        mirror each other's diagnoses through the bus, and a copy may arrive late.
        """
        device = diagnosis.device_id
        known = self.get(device, diagnosis.alarm_code)
        if known is not None and known.generated_at > diagnosis.generated_at:
            return self.headline(device) or known
        alarms = self._devices.get(device)
        if alarms is None:
            alarms = OrderedDict()
            self._devices[device] = alarms
            while len(self._devices) > self._max_devices:
                self._devices.popitem(last=False)
        self._devices.move_to_end(device)
        alarms.pop(diagnosis.alarm_code, None)
        alarms[diagnosis.alarm_code] = diagnosis
        while len(alarms) > self._max_alarms:
            cleared = next(
                (c for c, d in alarms.items() if d.state == DiagnosisState.CLEARED), None
            )
            alarms.pop(cleared if cleared is not None else next(iter(alarms)))
        return self.headline(device) or diagnosis

    def headline(self, device_id: str) -> Diagnosis | None:
        alarms = self._devices.get(device_id)
        if not alarms:
            return None
        active = [d for d in alarms.values() if d.state == DiagnosisState.ACTIVE]
        if not active:
            return next(reversed(alarms.values()))  # the most recently cleared
        return max(active, key=lambda d: (d.severity.rank, d.generated_at))
