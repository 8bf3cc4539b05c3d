"""access: the door controller. A key card AND a fingerprint of the same person open a door.

model.py (plain data), decision.py (pure: grant or deny, with a reason), state.py (pure:
anti-passback and lockout), sitekey.py (the site key and what is derived from it),
templates.py (sealed fingerprint templates), cardproof.py (clone-resistant card proof),
pcsc.py / osdp.py (card readers), zfm.py / fingerprint.py (fingerprint module), door.py (the
door's state machine), door_io.py (gpiod and its simulator twin), cache.py (credentials
cache), controller.py (the loop), each driver with a simulator twin in floor_agent/simulated/.
"""
