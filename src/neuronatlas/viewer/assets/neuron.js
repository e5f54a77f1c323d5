// neuronatlas neuron page: hovering a token shows its simulated and real values side by side.
// The page itself is static HTML (values are in each token's data-v and title); this only adds a
// readout that follows the pointer.
(function () {
  "use strict";
  const readout = document.createElement("div");
  readout.id = "readout";
  readout.hidden = true;
  document.body.appendChild(readout);
  document.addEventListener("mouseover", (event) => {
    const token = event.target.closest ? event.target.closest(".t") : null;
    if (!token) { readout.hidden = true; return; }
    const row = token.closest(".row");
    const excerpt = token.closest(".excerpt");
    const position = Array.prototype.indexOf.call(token.parentNode.children, token);
    const value = (label) => {
      const other = excerpt.querySelector(`.row.${label} .tokens`);
      const cell = other ? other.children[position] : null;
      return cell ? cell.dataset.v : "—";
    };
    readout.textContent = `token ${JSON.stringify(token.textContent)} · simulated ${value("simulated")} · real ${value("real")}`;
    readout.hidden = false;
    const box = row.getBoundingClientRect();
    readout.style.top = `${window.scrollY + box.bottom + 4}px`;
    readout.style.left = `${window.scrollX + token.getBoundingClientRect().left}px`;
  });
})();
