// The player page: start asciinema-player on the recording, at the time asked, at the speed
// chosen. Its settings come from the page's data attributes (no inline script: the
// Content-Security-Policy allows only this file and the player's).
"use strict";

(function () {
  const box = document.getElementById("player");
  if (!box || typeof AsciinemaPlayer === "undefined") {
    return;
  }
  const timeOut = document.getElementById("time");
  const speedSelect = document.getElementById("speed");
  let player = null;
  let ticker = null;

  function setState(state) {
    box.dataset.state = state;
  }

  function start(at, speed, autoPlay) {
    if (player) {
      player.dispose();
      box.replaceChildren();
    }
    if (ticker) {
      clearInterval(ticker);
    }
    box.dataset.speed = String(speed);
    setState("loading");
    player = AsciinemaPlayer.create(box.dataset.src, box, {
      startAt: at,
      speed: speed,
      autoPlay: autoPlay,
      preload: true,
      cols: Number(box.dataset.cols) || 80,
      rows: Number(box.dataset.rows) || 24,
      poster: at > 0 ? "npt:" + at : undefined,
      fit: "width",
    });
    player.addEventListener("ready", () => { if (box.dataset.state === "loading") setState("ready"); });
    player.addEventListener("play", () => setState("playing"));
    player.addEventListener("playing", () => setState("playing"));
    player.addEventListener("pause", () => setState("paused"));
    player.addEventListener("ended", () => setState("ended"));
    ticker = setInterval(async () => {
      const now = await player.getCurrentTime();
      if (timeOut && typeof now === "number") {
        timeOut.value = now.toFixed(1);
      }
    }, 250);
  }

  if (speedSelect) {
    speedSelect.addEventListener("change", async () => {
      const at = player ? await player.getCurrentTime() : 0;
      start(at || 0, Number(speedSelect.value) || 1, true);
    });
  }
  start(Number(box.dataset.start) || 0, Number(box.dataset.speed) || 1,
        box.dataset.autoplay === "1");
})();
